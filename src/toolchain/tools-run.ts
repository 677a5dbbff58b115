// Runs a program from mkosi's tools tree (systemd-dissect, systemd-repart, veritysetup) inside
// mkosi's sandbox, so the host needs none of them installed.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type RunOptions, type RunResult, run } from "../process/run.js";
import type { MkosiTool } from "./mkosi.js";
import { cacheDir } from "./paths.js";

export async function runTool(mkosi: MkosiTool, toolsTree: string, argv: string[], options: RunOptions = {}): Promise<RunResult> {
  // mkosi wants a project directory even for `sandbox`; an empty one carries no configuration.
  const project = join(cacheDir(), "sandbox-project");
  mkdirSync(project, { recursive: true });
  return run([...mkosi.argv, `--tools-tree=${toolsTree}`, `--directory=${project}`, "sandbox", ...argv], { ...options, env: { ...mkosi.env, ...options.env } });
}
