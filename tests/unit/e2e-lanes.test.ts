// The VM suite's lanes (tests/e2e/lanes.ts): every scenario runs in exactly one lane, and every
// scenario that serves updates on the fixture's fixed port shares the updates lane (two servers
// cannot listen on one port).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import type { TestSpecification } from "vitest/node";
import { LANES, LaneSequencer, scenarioOf } from "../e2e/lanes.js";
import { ROOT } from "../support/readme.js";

const scenariosDir = join(ROOT, "tests/e2e/scenarios");
const scenarios = readdirSync(scenariosDir);

it("puts every scenario in exactly one lane", () => {
  const laned = Object.values(LANES).flat();
  expect([...laned].sort()).toEqual([...scenarios].sort());
  expect(new Set(laned).size).toBe(laned.length);
});

it("keeps the scenarios that start an update server in the updates lane", () => {
  const serving = scenarios.filter((s) =>
    readdirSync(join(scenariosDir, s))
      .filter((f) => f.endsWith(".ts"))
      .some((f) => /\b(serveRelease|startUpdateServer)\(/.test(readFileSync(join(scenariosDir, s, f), "utf8"))),
  );
  expect(serving.length).toBeGreaterThan(1);
  expect([...serving].sort()).toEqual([...(LANES.updates ?? [])].sort());
});

it("orders scenario files by lane and leaves other files in vitest's order", async () => {
  const spec = (moduleId: string) => ({ moduleId, project: { config: { root: ROOT } } }) as unknown as TestSpecification;
  const files = ["readme", "first-boot", "fleet", "update"].map((s) => spec(join(scenariosDir, s, `${s}.e2e.ts`)));
  const ctx = { cache: { getFileTestResults: () => undefined, getFileStats: () => ({ size: 1 }) }, config: { sequence: {} } };
  const sorted = await new LaneSequencer(ctx as never).sort(files);
  expect(sorted.map((f) => scenarioOf(f.moduleId))).toEqual(["update", "fleet", "first-boot", "readme"]);
  expect(scenarioOf(join(ROOT, "src/vm/ssh.test.ts"))).toBeUndefined();
});
