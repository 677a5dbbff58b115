// Prints the generated mkosi tree of an appliance directory as the golden files hold it. Run as its
// own process by the determinism test; imported by the golden test.
import { loadAppliance } from "../../src/definition/load.js";
import { renderTree } from "../../src/generator/plan.js";
import type { TreeEntry } from "../../src/generator/tree.js";

export function serialiseTree(entries: Map<string, TreeEntry>): string {
  return [...entries]
    .map(([path, e]) => {
      if (e.kind === "symlink") return `=== ${path} -> ${e.target}\n`;
      if (e.kind === "copy") return `=== ${path} (copy of ${e.label})\n`;
      return `=== ${path} (${e.mode.toString(8)})\n${e.content}`;
    })
    .join("\n");
}

export function renderedTree(dir: string): string {
  return serialiseTree(renderTree(loadAppliance(dir)));
}

if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const dir = process.argv[2];
  if (!dir) throw new Error("usage: render-tree.ts DIR");
  process.stdout.write(renderedTree(dir));
}
