// The basalt command line. The only place that prints errors and decides exit codes.
import { Command, CommanderError } from "commander";
import pc from "picocolors";
import { DefinitionError, ToolError, UserError } from "../errors.js";
import { registerCommands } from "./commands.js";

const program = new Command("basalt")
  .description("Build, sign, ship, update and test immutable Linux appliance images")
  .option("--debug", "show stack traces of internal errors")
  .showHelpAfterError()
  .exitOverride();

registerCommands(program);

function printError(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode;
  if (e instanceof DefinitionError) {
    process.stderr.write(
      `${pc.red("error:")} the appliance definition has ${e.problems.length} problem${e.problems.length > 1 ? "s" : ""}; nothing was built\n`,
    );
    for (const line of e.message.split("\n")) process.stderr.write(`  ${line}\n`);
    return 2;
  }
  if (e instanceof ToolError) {
    process.stderr.write(`${pc.red("error:")} ${e.message}\n  command: ${e.command.join(" ")}\n`);
    if (e.tail)
      process.stderr.write(
        `${pc.dim(
          e.tail
            .split("\n")
            .slice(-15)
            .map((l) => `  | ${l}`)
            .join("\n"),
        )}\n`,
      );
    if (e.logPath) process.stderr.write(`  full log: ${e.logPath}\n`);
    return 1;
  }
  if (e instanceof UserError) {
    process.stderr.write(`${pc.red("error:")} ${e.message}\n`);
    if (e.hint) process.stderr.write(`  ${e.hint}\n`);
    return 1;
  }
  process.stderr.write(`${pc.red("internal error:")} ${e instanceof Error ? e.message : String(e)}\n`);
  if (program.opts().debug && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  else process.stderr.write("  this is a bug in Basalt; rerun with --debug and report the stack trace\n");
  return 70;
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = printError(e);
}
