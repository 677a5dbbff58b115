// Golden files: the generated mkosi tree of every example, the JSON Schema and the key reference.
// Regenerate with `npm run golden:update` and review the diff.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadAppliance } from "../../src/definition/load.js";
import { renderReference } from "../../src/definition/reference.js";
import { renderJsonSchema } from "../../src/definition/schema.js";
import { renderTree } from "../../src/generator/plan.js";
import type { TreeEntry } from "../../src/generator/tree.js";

const root = join(import.meta.dirname, "../..");
const update = process.env.UPDATE_GOLDEN === "1";

function golden(file: string, actual: string): void {
  const path = join(root, file);
  if (update || !existsSync(path)) writeFileSync(path, actual);
  expect(actual, `${file} is out of date: run npm run golden:update and review the diff`).toBe(readFileSync(path, "utf8"));
}

function serialise(entries: Map<string, TreeEntry>): string {
  return [...entries]
    .map(([path, e]) => {
      if (e.kind === "symlink") return `=== ${path} -> ${e.target}\n`;
      if (e.kind === "copy") return `=== ${path} (copy of ${e.label})\n`;
      return `=== ${path} (${e.mode.toString(8)})\n${e.content}`;
    })
    .join("\n");
}

describe("golden files", () => {
  const examples = readdirSync(join(root, "examples"));
  for (const name of examples) {
    it(`mkosi tree of examples/${name}`, () => {
      golden(`tests/golden/${name}.mkosi.txt`, serialise(renderTree(loadAppliance(join(root, "examples", name)))));
    });
  }
  it("JSON Schema", () => golden("docs/appliance.schema.json", renderJsonSchema()));
  it("key reference", () => golden("docs/appliance-reference.md", renderReference()));
  it("rendering is deterministic", () => {
    const dir = join(root, "examples", examples[0] ?? "minimal");
    expect(serialise(renderTree(loadAppliance(dir)))).toBe(serialise(renderTree(loadAppliance(dir))));
  });
});
