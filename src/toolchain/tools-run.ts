// Runs a program from mkosi's tools tree (systemd-dissect, systemd-repart, veritysetup, qemu) inside
// mkosi's sandbox, so the host needs none of them installed.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type RunOptions, type RunResult, run } from "../process/run.js";
import type { MkosiTool } from "./mkosi.js";
import { cacheDir } from "./paths.js";

/** The command prefix that runs what follows it inside the tools tree. */
export function sandboxArgv(mkosi: MkosiTool, toolsTree: string): string[] {
  // mkosi wants a project directory even for `sandbox`; an empty one carries no configuration.
  const project = join(cacheDir(), "sandbox-project");
  mkdirSync(project, { recursive: true });
  return [...mkosi.argv, `--tools-tree=${toolsTree}`, `--directory=${project}`, "sandbox"];
}

export async function runTool(mkosi: MkosiTool, toolsTree: string, argv: string[], options: RunOptions = {}): Promise<RunResult> {
  return run([...sandboxArgv(mkosi, toolsTree), ...argv], { ...options, env: { ...mkosi.env, ...options.env } });
}
