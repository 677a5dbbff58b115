// mkosi's tools tree (systemd 257 repart/ukify/dissect, erofs-utils, qemu, swtpm, OVMF): built once
// with mkosi's own mkosi-tools configuration and reused by every build.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { run } from "../process/run.js";
import type { Reporter } from "../report/reporter.js";
import { debianSourcesFor, readHostSources, renderDeb822 } from "./apt-sources.js";
import type { MkosiTool } from "./mkosi.js";
import { cacheDir } from "./paths.js";

export const TOOLS_RELEASE = "trixie";
// On top of mkosi-tools: veritysetup for verification, qemu-img for VM overlays.
const EXTRA_TOOLS = ["cryptsetup-bin", "qemu-utils"];

/** A sandbox tree whose apt sources replace mkosi's built-in list (which adds an unserved debian-debug). */
export function ensureSandboxTree(release: string): string {
  const dir = join(cacheDir(), "sandbox", release);
  const file = join(dir, "etc/apt/sources.list.d/mkosi.sources");
  const text = renderDeb822(debianSourcesFor(readHostSources(), release));
  if (!existsSync(file) || readFileSync(file, "utf8") !== text) {
    mkdirSync(join(dir, "etc/apt/sources.list.d"), { recursive: true });
    writeFileSync(file, text);
  }
  return dir;
}

export function packageCacheDir(): string {
  const dir = join(cacheDir(), "packages");
  mkdirSync(dir, { recursive: true });
  return dir;
}

function toolsKey(mkosi: MkosiTool): string {
  return createHash("sha256")
    .update(JSON.stringify([mkosi.version, TOOLS_RELEASE, EXTRA_TOOLS]))
    .digest("hex")
    .slice(0, 12);
}

export function toolsTreePath(mkosi: MkosiTool): string {
  return join(cacheDir(), "tools", `${TOOLS_RELEASE}-${toolsKey(mkosi)}`, "mkosi.tools");
}

export interface ToolsTreeOptions {
  logFile: string;
  onLine?: (line: string) => void;
}

/** Returns the tools tree, building it first when it is missing. */
export async function ensureToolsTree(mkosi: MkosiTool, reporter: Reporter, options: ToolsTreeOptions): Promise<string> {
  const final = toolsTreePath(mkosi);
  if (existsSync(join(final, "usr/bin/systemd-repart"))) return final;
  const parent = join(final, "..");
  const staging = `${parent}.tmp`;
  rmSync(staging, { recursive: true, force: true });
  const project = join(staging, "project");
  mkdirSync(project, { recursive: true });
  reporter.step("building mkosi's tools tree (once; takes a few minutes)");
  await run(
    [
      ...mkosi.argv,
      "--directory",
      project,
      "--include=mkosi-tools",
      "--distribution=debian",
      `--release=${TOOLS_RELEASE}`,
      `--sandbox-tree=${ensureSandboxTree(TOOLS_RELEASE)}`,
      `--output-directory=${staging}`,
      `--package-cache-directory=${packageCacheDir()}`,
      ...EXTRA_TOOLS.map((p) => `--package=${p}`),
      "build",
    ],
    { env: mkosi.env, logFile: options.logFile, ...(options.onLine ? { onLine: options.onLine } : {}) },
  );
  rmSync(project, { recursive: true, force: true });
  rmSync(parent, { recursive: true, force: true });
  renameSync(staging, parent);
  pruneOldToolsTrees(parent);
  return final;
}

// A tools tree is 1.6 GB; trees made for another mkosi version or package set are never used again.
function pruneOldToolsTrees(current: string): void {
  const root = dirname(current);
  for (const name of readdirSync(root)) {
    if (name !== basename(current) && name.startsWith(`${TOOLS_RELEASE}-`)) rmSync(join(root, name), { recursive: true, force: true });
  }
}
