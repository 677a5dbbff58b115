// Golden files: the generated mkosi tree of every example, the JSON Schema and the key reference.
// Regenerate with `npm run golden:update` and review the diff.
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderReference } from "../../src/definition/reference.js";
import { renderJsonSchema } from "../../src/definition/schema.js";
import { ensureLoginKey } from "../../src/keys/login-key.js";
import { renderedTree } from "../support/render-tree.js";

const root = join(import.meta.dirname, "../..");
const update = process.env.UPDATE_GOLDEN === "1";

/** Compares with the golden file; only `npm run golden:update` writes one, a missing one fails. */
function golden(file: string, actual: string): void {
  const path = join(root, file);
  if (update) {
    writeFileSync(path, actual);
    return;
  }
  expect(existsSync(path), `${file} is missing: run npm run golden:update and commit it`).toBe(true);
  expect(actual, `${file} is out of date: run npm run golden:update and review the diff`).toBe(readFileSync(path, "utf8"));
}

/**
 * A copy of an example as a fresh clone has it (no out/, no keys/), with the login key its key set
 * would bring (examples/minimal authorizes it): the tree names the file, not its content.
 */
function exampleCopy(name: string): string {
  const dir = join(mkdtempSync(join(tmpdir(), "basalt-golden-")), name);
  cpSync(join(root, "examples", name), dir, { recursive: true, filter: (src) => !/\/(out|keys)$/.test(src) });
  mkdirSync(join(dir, "keys"), { mode: 0o700 });
  ensureLoginKey(join(dir, "keys", "login_ed25519"), "golden");
  return dir;
}

describe("golden files", () => {
  const examples = readdirSync(join(root, "examples"));
  for (const name of examples) {
    it(`mkosi tree of examples/${name}`, () => {
      golden(`tests/golden/${name}.mkosi.txt`, renderedTree(exampleCopy(name)));
    });
  }
  it("JSON Schema", () => golden("docs/appliance.schema.json", renderJsonSchema()));
  it("key reference", () => golden("docs/appliance-reference.md", renderReference()));
  it("renders the same tree in two processes with different time zones and locales", () => {
    const dir = exampleCopy(examples[0] ?? "minimal");
    const render = (env: Record<string, string>) =>
      execFileSync(join(root, "node_modules/.bin/tsx"), [join(root, "tests/support/render-tree.ts"), dir], {
        encoding: "utf8",
        env: { ...process.env, ...env },
      });
    const a = render({ TZ: "UTC", LANG: "C.UTF-8" });
    const b = render({ TZ: "Pacific/Kiritimati", LANG: "de_DE.UTF-8" });
    expect(a.length).toBeGreaterThan(1000);
    expect(b).toBe(a);
    expect(renderedTree(dir)).toBe(a);
  });
});
