// Build benchmark (not a test): a build without the image cache ("cold": tools tree and package
// cache kept, as on any machine after its first build), then a warm rebuild after a one-line change.
// Writes bench/results/build.json with times and sizes.
import { closeSync, cpSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { buildAppliance } from "../src/build/build.js";
import { readAt, readGpt } from "../src/inspect/gpt.js";
import { createReporter } from "../src/report/reporter.js";
import { cacheDir } from "../src/toolchain/paths.js";

const root = join(import.meta.dirname, "..");
const dir = mkdtempSync(join(tmpdir(), "basalt-bench-"));
cpSync(join(root, "examples/minimal"), dir, { recursive: true, filter: (src) => !/\/(out|keys)$/.test(src) });
const toml = join(dir, "appliance.toml");
writeFileSync(toml, readFileSync(toml, "utf8").replace('id = "minimal"', 'id = "benchmark"'));
rmSync(join(cacheDir(), "images", "benchmark"), { recursive: true, force: true });

async function timed() {
  const reporter = createReporter({ live: false });
  const start = performance.now();
  const result = await buildAppliance(dir, { reporter });
  return { seconds: (performance.now() - start) / 1000, phases: reporter.timings, result };
}

/** Size of the EROFS file system inside the root partition, before slot padding. */
function erofsBytes(image: string): number {
  const root = readGpt(image).partitions.find((p) => p.type === "root");
  const fd = openSync(image, "r");
  try {
    const sb = readAt(fd, (root?.offset ?? 0) + 1024, 64);
    return sb.readUInt32LE(36) * 2 ** (sb[12] ?? 12);
  } finally {
    closeSync(fd);
  }
}

const cold = await timed();
writeFileSync(toml, readFileSync(toml, "utf8").replace('description = "Basalt minimal appliance"', 'description = "Basalt benchmark appliance"'));
const warm = await timed();
const m = warm.result.manifest;
const report = {
  machine: { cpus: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
  coldSeconds: Math.round(cold.seconds),
  warmSeconds: Math.round(warm.seconds),
  warmToColdRatio: Number((warm.seconds / cold.seconds).toFixed(2)),
  coldPhases: cold.phases,
  warmPhases: warm.phases,
  rootFilesystemBytes: erofsBytes(warm.result.image),
  artifacts: Object.fromEntries(m.artifacts.map((a) => [a.kind, a.size])),
  goals: { warmSeconds: 60, rootFilesystemBytes: 110e6, ukiBytes: 40e6 },
};
mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/build.json"), `${JSON.stringify(report, null, 2)}\n`);
console.log(JSON.stringify(report, null, 2));
rmSync(dir, { recursive: true, force: true });
