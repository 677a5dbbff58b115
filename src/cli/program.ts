// The basalt program: every command and the parser settings they rely on, apart from main.ts (which
// runs it and prints errors) so that tests parse command lines exactly as the CLI does.
import { Command, type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import { registerCommands } from "./commands.js";

function* commandsBelow(cmd: CommandUnknownOpts): Generator<CommandUnknownOpts> {
  for (const sub of cmd.commands) {
    yield sub;
    yield* commandsBelow(sub);
  }
}

export function createProgram() {
  const program = new Command("basalt")
    .description("Build, sign, ship, update and test immutable Linux appliance images")
    .option("--debug", "show stack traces of internal errors")
    // Options belong to the command they follow, so that `basalt vm ssh DIR CMD…` can hand the
    // options after its target to the remote command (commander's passThroughOptions needs this).
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();
  registerCommands(program);
  // …and --debug is still taken after a command, where people type it when they rerun one.
  for (const cmd of commandsBelow(program)) cmd.addOption(new Option("--debug").hideHelp());
  return program;
}
