// npm run test:e2e [-- SCENARIO…]: the VM suite. On a machine with at least 4 cores (or with
// BASALT_E2E_LANES=parallel) its lanes (tests/e2e/lanes.ts) run side by side, one vitest process
// each, their output interleaved line by line with the lane's name in front; the run fails if any
// lane fails. The lanes share one run id, so what one lane built in this run the other reuses.
// Otherwise (BASALT_E2E_LANES=serial), or with scenario names, one process runs them one after
// another: on 2 cores two lanes took as long as one (2,438 s against 2,678 s, a VM under TCG keeps
// 1.4 cores busy) and doubled every boot's time.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { LANES } from "../tests/e2e/lanes.js";

const root = join(import.meta.dirname, "..");
const scenarioFiles = (names: string[]) => names.map((n) => (n.includes("/") ? n : `tests/e2e/scenarios/${n}/`));
const env = { ...process.env, BASALT_E2E_RUN: process.env.BASALT_E2E_RUN || randomUUID() };

function vitest(files: string[], prefix: string): Promise<number> {
  const child = spawn("npx", ["vitest", "run", "--project", "e2e", ...files], {
    cwd: root,
    env,
    stdio: prefix ? ["ignore", "pipe", "pipe"] : "inherit",
  });
  if (prefix) {
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream }).on("line", (line) => process.stdout.write(`${prefix}${line}\n`));
    }
  }
  return new Promise((resolve) => child.on("close", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

const started = performance.now();
const args = process.argv.slice(2);
const mode = process.env.BASALT_E2E_LANES || (availableParallelism() >= 4 ? "parallel" : "serial");
if (mode !== "parallel" && mode !== "serial") throw new Error(`BASALT_E2E_LANES: expected parallel or serial, not ${mode}`);
const lanes = args.length || mode === "serial" ? { all: args.length ? args : Object.values(LANES).flat() } : LANES;
const names = Object.keys(lanes);
console.log(`e2e: ${names.length > 1 ? `${names.length} lanes side by side` : "one lane"} (${availableParallelism()} cores)`);
const width = Math.max(...names.map((n) => n.length));
const results = await Promise.all(
  Object.entries(lanes).map(async ([lane, scenarios]) => {
    const t0 = performance.now();
    const code = await vitest(scenarioFiles(scenarios), names.length > 1 ? `[${lane.padEnd(width)}] ` : "");
    return { lane, code, seconds: (performance.now() - t0) / 1000 };
  }),
);
for (const r of results) console.log(`e2e lane ${r.lane}: ${r.code === 0 ? "passed" : `FAILED (exit ${r.code})`} in ${r.seconds.toFixed(0)} s`);
console.log(`e2e: ${((performance.now() - started) / 1000).toFixed(0)} s in all`);
process.exitCode = results.some((r) => r.code !== 0) ? 1 : 0;
