// The basalt command line. The only place that prints errors and decides exit codes.
import { CommanderError } from "@commander-js/extra-typings";
import pc from "picocolors";
import { DefinitionError, exitCode, ToolError, UserError } from "../errors.js";
import { createProgram } from "./program.js";

const program = createProgram();
// --debug given before the command or after it (each command takes it too).
let debug = false;
program.hook("preAction", (_, action) => {
  debug = Boolean(action.optsWithGlobals().debug);
});

function printError(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode;
  if (e instanceof DefinitionError) {
    process.stderr.write(
      `${pc.red("error:")} the appliance definition has ${e.problems.length} problem${e.problems.length > 1 ? "s" : ""}; nothing was built\n`,
    );
    for (const line of e.message.split("\n")) process.stderr.write(`  ${line}\n`);
    return exitCode(e);
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
    return exitCode(e);
  }
  if (e instanceof UserError) {
    process.stderr.write(`${pc.red("error:")} ${e.message}\n`);
    if (e.hint) process.stderr.write(`  ${e.hint}\n`);
    return exitCode(e);
  }
  process.stderr.write(`${pc.red("internal error:")} ${e instanceof Error ? e.message : String(e)}\n`);
  if ((debug || program.opts().debug) && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  else process.stderr.write("  this is a bug in Basalt; rerun with --debug and report the stack trace\n");
  return exitCode(e);
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = printError(e);
}
