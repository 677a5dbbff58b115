// Plan: render every feature into an mkosi tree and write it, with plan.json, to DIR/out/plan.
// The tree is replaced atomically, so a failed plan never leaves a half-written one behind.
import { cpSync, existsSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { LoadedAppliance } from "../definition/load.js";
import { features } from "../features/registry.js";
import { MkosiTree, type TreeEntry } from "./tree.js";

export const PLAN_FORMAT = 1;

export interface Plan {
  format: number;
  id: string;
  version: string;
  /** The resolved definition, defaults applied. */
  appliance: unknown;
  /** Relative path of every generated entry, for review and golden tests. */
  files: string[];
}

export function renderTree(loaded: LoadedAppliance): Map<string, TreeEntry> {
  const tree = new MkosiTree();
  for (const f of features) f.render(loaded.appliance, tree, loaded.context);
  return tree.finish();
}

export function createPlan(loaded: LoadedAppliance, entries: Map<string, TreeEntry>): Plan {
  return {
    format: PLAN_FORMAT,
    id: loaded.appliance.id,
    version: loaded.appliance.version,
    appliance: loaded.appliance,
    files: [...entries.keys()],
  };
}

export function planDir(applianceDir: string): string {
  return join(applianceDir, "out", "plan");
}

/** Writes the plan (mkosi/ tree and plan.json) into `target`, replacing what was there. */
export function writePlan(target: string, entries: Map<string, TreeEntry>, plan: Plan): void {
  const staging = `${target}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  try {
    const root = join(staging, "mkosi");
    mkdirSync(root, { recursive: true });
    for (const [path, entry] of entries) {
      const dest = join(root, path);
      mkdirSync(dirname(dest), { recursive: true });
      if (entry.kind === "file") writeFileSync(dest, entry.content, { mode: entry.mode });
      else if (entry.kind === "symlink") symlinkSync(entry.target, dest);
      else if (entry.optional && !existsSync(entry.from)) continue;
      else cpSync(entry.from, dest, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    }
    writeFileSync(join(staging, "plan.json"), `${JSON.stringify(plan, null, 2)}\n`);
    rmSync(target, { recursive: true, force: true });
    mkdirSync(dirname(target), { recursive: true });
    renameSync(staging, target);
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }
}
