// Deep-inspect benchmark (not a test): how fast `basalt inspect --deep` re-hashes the root partition
// (verifyVerityTree, worker threads) against `veritysetup verify` (cryptsetup-bin) on the same image, in
// one run. veritysetup cannot read the data at an offset, so both partitions are first copied to files.
// Rounds alternate the two, after a warm-up, with the files in the page cache; medians are reported.
// Each basalt run starts its worker threads (the pool of an earlier run has ended), as a CLI run does.
// Image: BENCH_IMAGE, or the latest build of examples/minimal. Rounds: BENCH_ROUNDS (default 5).
// Writes bench/results/inspect.json.
import { execFile } from "node:child_process";
import { closeSync, createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { readGpt } from "../src/inspect/gpt.js";
import { readVerityRootHash, VERITY_WORKERS_IDLE_MS, verifyVerityTree } from "../src/inspect/verity.js";

const run = promisify(execFile);
const root = join(import.meta.dirname, "..");
const image = process.env.BENCH_IMAGE ?? join(root, "examples/minimal/out/1.0/minimal_1.0.raw");
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
if (!existsSync(image)) throw new Error(`no image at ${image}: build examples/minimal (./basalt build examples/minimal) or set BENCH_IMAGE`);
const veritysetupVersion = await run("veritysetup", ["--version"]).then(
  (r) => r.stdout.trim(),
  () => {
    throw new Error("veritysetup is missing: apt-get install -y --no-install-recommends cryptsetup-bin");
  },
);

const partitions = readGpt(image).partitions;
const data = partitions.find((p) => p.type === "root");
const hash = partitions.find((p) => p.type === "root-verity");
if (!data || !hash) throw new Error(`${image} has no root and root-verity partitions`);
const fd = openSync(image, "r");
const { superblock, rootHash } = readVerityRootHash(fd, hash.offset);
const dataBytes = superblock.dataBlocks * superblock.dataBlockSize;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};
const timed = async (f: () => Promise<unknown>) => {
  const start = performance.now();
  await f();
  return (performance.now() - start) / 1000;
};
const summary = (seconds: number[]) => ({
  seconds: seconds.map((s) => Number(s.toFixed(3))),
  medianSeconds: Number(median(seconds).toFixed(3)),
  megabytesPerSecond: Number((dataBytes / 1e6 / median(seconds)).toFixed(1)),
});

const scratch = mkdtempSync(join(tmpdir(), "basalt-bench-inspect-"));
try {
  const dataFile = join(scratch, "root.raw");
  const hashFile = join(scratch, "root-verity.raw");
  const copy = (offset: number, size: number, to: string) =>
    pipeline(createReadStream(image, { start: offset, end: offset + size - 1, highWaterMark: 4 << 20 }), createWriteStream(to));
  await copy(data.offset, data.size, dataFile);
  await copy(hash.offset, hash.size, hashFile);

  const veritysetup = () => run("veritysetup", ["verify", dataFile, hashFile, rootHash]);
  const basalt = async (workers?: number) => {
    await sleep(VERITY_WORKERS_IDLE_MS + 500);
    const start = performance.now();
    const r = await verifyVerityTree(fd, data.offset, hash.offset, workers ? { workers } : {});
    const seconds = (performance.now() - start) / 1000;
    if (r.rootHash !== rootHash || !r.treeMatches) throw new Error(`basalt's deep check failed on ${image}`);
    return seconds;
  };
  const cli = (deep: boolean) =>
    run(process.execPath, [join(root, "bin/basalt.js"), "inspect", "--json", ...(deep ? ["--deep"] : []), image], { maxBuffer: 64 << 20 });

  // Warm-up: every file read once by each side, so that all rounds read from the page cache.
  const loadBefore = loadavg();
  await veritysetup();
  await basalt();
  const times = { veritysetup: [] as number[], basalt: [] as number[], basaltOneWorker: [] as number[], cliDeep: [] as number[], cli: [] as number[] };
  for (let i = 0; i < rounds; i++) {
    // Alternate who goes first, so that a change in the machine's load does not favour one side.
    const pair = [async () => times.veritysetup.push(await timed(veritysetup)), async () => times.basalt.push(await basalt())];
    for (const f of i % 2 ? pair.reverse() : pair) await f();
    times.basaltOneWorker.push(await basalt(1));
  }
  // The whole command, as a user runs it: the deep run minus the plain one is the re-hashing.
  for (let i = 0; i < Math.min(rounds, 3); i++) {
    times.cliDeep.push(await timed(() => cli(true)));
    times.cli.push(await timed(() => cli(false)));
  }
  const loadAfter = loadavg();

  const v = summary(times.veritysetup);
  const b = summary(times.basalt);
  const cliVerifySeconds = median(times.cliDeep) - median(times.cli);
  const report = {
    at: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? "?",
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      veritysetup: veritysetupVersion,
      loadAverage1mBefore: Number(loadBefore[0]?.toFixed(2)),
      loadAverage1mAfter: Number(loadAfter[0]?.toFixed(2)),
    },
    image: {
      path: image,
      bytes: statSync(image).size,
      dataPartitionBytes: data.size,
      verifiedDataBytes: dataBytes,
      hashPartitionBytes: hash.size,
      algorithm: superblock.algorithm,
      hashType: superblock.hashType,
      rootHash,
    },
    rounds,
    veritysetupVerify: v,
    basaltDeep: { workers: "os.availableParallelism()", ...b },
    basaltDeepOneWorker: summary(times.basaltOneWorker),
    cli: {
      inspectDeepSeconds: times.cliDeep.map((s) => Number(s.toFixed(3))),
      inspectSeconds: times.cli.map((s) => Number(s.toFixed(3))),
      deepMinusPlainMedianSeconds: Number(cliVerifySeconds.toFixed(3)),
      megabytesPerSecond: Number((dataBytes / 1e6 / cliVerifySeconds).toFixed(1)),
    },
    // basalt over veritysetup: of the medians, and per round (the two measured back to back).
    ratio: Number((b.megabytesPerSecond / v.megabytesPerSecond).toFixed(2)),
    ratioPerRound: times.basalt.map((t, i) => Number(((times.veritysetup[i] ?? 0) / t).toFixed(2))),
    goal: 0.8,
  };
  mkdirSync(join(root, "bench/results"), { recursive: true });
  writeFileSync(join(root, "bench/results/inspect.json"), `${JSON.stringify(report, null, 2)}\n`);
  console.log(JSON.stringify(report, null, 2));
} finally {
  closeSync(fd);
  rmSync(scratch, { recursive: true, force: true });
}
