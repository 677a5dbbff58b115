// npm run test:soak -- [--runs N] [SCENARIO…]: runs chosen VM scenarios N times in a row (the first
// run builds or reuses the images, later ones reuse them) and reports, per scenario and per step,
// how often it failed and how long it took: flakiness measured, not guessed.
// Writes the report as JSON to <BASALT_E2E_DIR>/soak-<time>.json and prints a table.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { workDir } from "../tests/e2e/harness/image.js";

const { values, positionals } = parseArgs({ options: { runs: { type: "string", default: "3" } }, allowPositionals: true });
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs: expected a whole number, not ${values.runs}`);
const root = join(import.meta.dirname, "..");
const files = positionals.length ? positionals.map((p) => (p.includes("/") ? p : `tests/e2e/scenarios/${p}`)) : ["tests/e2e/scenarios"];

interface Timing {
  scenario: string;
  failed: boolean;
  failedStep: string | null;
  seconds: number;
  steps: { name: string; seconds: number }[];
}

const log = join(workDir(), "timings.jsonl");
const offset = existsSync(log) ? statSync(log).size : 0;
const exits: number[] = [];
for (let i = 0; i < runs; i++) {
  console.log(`soak: run ${i + 1} of ${runs}: ${files.join(" ")}`);
  const r = spawnSync("npx", ["vitest", "run", "--project", "e2e", ...files], {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, ...(i > 0 ? { BASALT_E2E_REUSE: "1" } : {}) },
  });
  exits.push(r.status ?? 1);
}
const timings = (existsSync(log) ? readFileSync(log, "utf8").slice(offset) : "")
  .split("\n")
  .filter(Boolean)
  .map((l) => JSON.parse(l) as Timing);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const scenarios = [...new Set(timings.map((t) => t.scenario))].map((name) => {
  const mine = timings.filter((t) => t.scenario === name);
  const stepNames = [...new Set(mine.flatMap((t) => [...t.steps.map((s) => s.name), ...(t.failedStep ? [t.failedStep] : [])]))];
  return {
    scenario: name,
    runs: mine.length,
    failures: mine.filter((t) => t.failed).length,
    medianSeconds: Math.round(median(mine.map((t) => t.seconds))),
    steps: stepNames.map((step) => {
      const seconds = mine.flatMap((t) => t.steps.filter((s) => s.name === step).map((s) => s.seconds));
      return {
        step,
        failures: mine.filter((t) => t.failedStep === step).length,
        medianSeconds: Number(median(seconds).toFixed(1)),
        maxSeconds: Number(Math.max(0, ...seconds).toFixed(1)),
      };
    }),
  };
});
const report = { at: new Date().toISOString(), runs, files, exitCodes: exits, scenarios };
const out = join(workDir(), `soak-${report.at.replace(/[:.]/g, "-")}.json`);
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
for (const sc of scenarios) {
  console.log(`${sc.scenario}: ${sc.runs - sc.failures}/${sc.runs} passed, median ${sc.medianSeconds} s`);
  for (const st of sc.steps.filter((x) => x.failures)) console.log(`  failed ${st.failures}×: ${st.step}`);
}
console.log(`soak report: ${out}`);
process.exitCode = scenarios.some((s) => s.failures) || exits.some((c) => c !== 0) ? 1 : 0;
