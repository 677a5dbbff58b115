// Fleet load benchmark (not a test): 10,000 simulated devices check for updates (index and
// signature at once, as systemd-pull does) and report, against a real `basalt serve` process (given
// no key) on loopback, once with SQLite and once with PostgreSQL (a throwaway server). Half the fleet is inside
// a staged rollout and downloads the new UKI. Latencies are measured by the devices; every report
// must land (counted from /metrics afterwards) and no request may fail.
// Writes bench/results/fleet.json.
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { spawnDaemon } from "../src/process/run.js";
import { deviceToken } from "../src/server/auth.js";
import { ApiClient } from "../src/server/client.js";
import { freePort } from "../src/vm/machine.js";
import { standInRelease } from "../tests/support/fleet-server.js";
import { startPostgres } from "../tests/support/postgres.js";
import { SimulatedDevice } from "../tests/support/simulated-device.js";

const DEVICES = Number(process.env.BENCH_DEVICES ?? 10_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 200);
/** The whole run must finish within this; a slower server fails the benchmark rather than hanging it. */
const LIMIT_SECONDS = Number(process.env.BENCH_LIMIT_SECONDS ?? 600);
const IMAGE = "loadtest";
const root = join(import.meta.dirname, "..");

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Number((s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0).toFixed(2)) : 0;
};

/**
 * The simulated fleet comes from one address, so the per-address limit on device routes is set too
 * high to refuse anything: its cost stays in the figures. `rateLimit` 0 turns it off (for the ratio).
 */
async function runServer(database: string | undefined, work: string, rateLimit: number) {
  const data = join(work, "data");
  mkdirSync(data, { recursive: true });
  const token = randomBytes(24).toString("hex");
  writeFileSync(join(work, "token"), `${token}\n`, { mode: 0o600 });
  const secret = randomBytes(32);
  writeFileSync(join(work, "secret"), `${secret.toString("base64")}\n`, { mode: 0o600 });
  const port = await freePort();
  const argv = [
    process.execPath,
    join(root, "bin/basalt.js"),
    "serve",
    "--data",
    data,
    "--port",
    String(port),
    "--token-file",
    join(work, "token"),
    "--secret-file",
    join(work, "secret"),
    ...(database ? ["--database", database] : []),
    "--device-rate-limit",
    String(rateLimit),
  ];
  const daemon = spawnDaemon(argv, { logFile: join(work, "server.log") });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      await fetch(`${url}/metrics`);
      break;
    } catch {
      if (i > 100) throw new Error(`the server did not start; see ${join(work, "server.log")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { url, token, secret, daemon };
}

async function publish(api: ApiClient, version: string, percent: number) {
  const { manifest, files } = await standInRelease(IMAGE, version, { uki: 64 * 1024, root: 256 * 1024 });
  const path = `/releases/${IMAGE}/${version}`;
  await api.request("POST", path, manifest);
  for (const [name, bytes] of Object.entries(files)) {
    await api.request("PUT", `${path}/${name}`, undefined, {
      headers: { "content-type": "application/octet-stream" },
      body: Readable.toWeb(Readable.from([bytes])) as ReadableStream,
      duplex: "half",
    });
  }
  await api.request("POST", `${path}/commit`);
  await api.request("POST", "/channels/stable/promote", { id: IMAGE, version, percent });
}

/** Runs `job` for every item with at most `limit` at once. */
async function pool<T>(items: T[], limit: number, job: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await job(items[next++] as T);
    }),
  );
}

async function scenario(name: string, database: string | undefined, rateLimit = 1_000_000_000) {
  const work = mkdtempSync(join(tmpdir(), `basalt-bench-fleet-${name}-`));
  const server = await runServer(database, work, rateLimit);
  try {
    const api = new ApiClient(server.url, server.token);
    await publish(api, "1.0", 100);
    await publish(api, "2.0", 50);
    const devices = Array.from({ length: DEVICES }, () => {
      const machine = randomBytes(16).toString("hex");
      return new SimulatedDevice({
        server: server.url,
        image: IMAGE,
        channel: "stable",
        version: "1.0",
        machine,
        token: deviceToken(server.secret, IMAGE, machine),
      });
    });
    const latency = { check: [] as number[], report: [] as number[], download: [] as number[] };
    const errors: string[] = [];
    let reports = 0;
    let updated = 0;
    const start = performance.now();
    const deadline = start + LIMIT_SECONDS * 1000;
    await pool(devices, CONCURRENCY, async (d) => {
      if (performance.now() > deadline) {
        errors.push("time limit");
        return;
      }
      try {
        const check = await d.poll();
        latency.check.push(check.ms);
        if (check.status !== 200) errors.push(`check ${check.status}`);
        if (check.offered) {
          const t = performance.now();
          await d.update();
          latency.download.push(performance.now() - t);
          updated++;
        }
        const t = performance.now();
        const status = await d.report("update");
        latency.report.push(performance.now() - t);
        if (status === 204) reports++;
        else errors.push(`report ${status}`);
      } catch (e) {
        errors.push((e as Error).message);
      }
    });
    const seconds = (performance.now() - start) / 1000;
    // Every report the server acknowledged must be in the database, once.
    const metrics = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.token}` } })).text();
    const stored = Number(/^basalt_reports_total\{image="loadtest"\} (\d+)$/m.exec(metrics)?.[1] ?? -1);
    const known = [...metrics.matchAll(/^basalt_devices\{image="loadtest",version="[^"]+"\} (\d+)$/gm)].reduce((s, m) => s + Number(m[1]), 0);
    // A device offered the release checks again and fetches its two files.
    const requests = latency.check.length * 2 + latency.report.length + updated * 4;
    return {
      backend: name,
      deviceRateLimit: rateLimit > 0,
      devices: DEVICES,
      concurrency: CONCURRENCY,
      seconds: Number(seconds.toFixed(1)),
      requests,
      requestsPerSecond: Math.round(requests / seconds),
      offeredTheStagedRelease: updated,
      checkMs: { p50: percentile(latency.check, 50), p99: percentile(latency.check, 99) },
      reportMs: { p50: percentile(latency.report, 50), p99: percentile(latency.report, 99) },
      updateDownloadMs: { p50: percentile(latency.download, 50), p99: percentile(latency.download, 99) },
      errors: errors.length,
      firstErrors: [...new Set(errors)].slice(0, 5),
      reportsAcknowledged: reports,
      reportsStored: stored,
      lostReports: reports - stored,
      devicesInInventory: known,
    };
  } finally {
    server.daemon.kill("SIGTERM");
    await Promise.race([server.daemon.exited, new Promise((r) => setTimeout(r, 5000))]);
    rmSync(work, { recursive: true, force: true });
  }
}

type Result = Awaited<ReturnType<typeof scenario>>;
const results: Result[] = [];
const median = (xs: number[]) => percentile(xs, 50);
// This machine is shared and noisy: a warm-up first (JIT, page cache), then ROUNDS rounds of the
// rate limit off and on, in alternating order, compared by their medians.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
await scenario("warm-up", undefined);
const limited: Result[] = [];
const unlimited: Result[] = [];
for (let round = 0; round < ROUNDS; round++) {
  for (const on of round % 2 ? [true, false] : [false, true]) {
    const r = await scenario(on ? "sqlite" : "sqlite-no-rate-limit", undefined, on ? 1_000_000_000 : 0);
    (on ? limited : unlimited).push(r);
    results.push(r);
    console.log(JSON.stringify(r));
  }
}
// BENCH_BACKENDS=sqlite leaves PostgreSQL out.
if ((process.env.BENCH_BACKENDS ?? "sqlite,postgres").split(",").includes("postgres")) {
  const pg = await startPostgres();
  try {
    results.push(await scenario("postgres", pg.url));
    console.log(JSON.stringify(results.at(-1)));
  } finally {
    await pg.stop();
  }
}
const summary = (rs: Result[]) => ({
  runs: rs.length,
  requestsPerSecond: median(rs.map((r) => r.requestsPerSecond)),
  checkMsP50: median(rs.map((r) => r.checkMs.p50)),
  checkMsP99: median(rs.map((r) => r.checkMs.p99)),
  reportMsP99: median(rs.map((r) => r.reportMs.p99)),
});
const on = summary(limited);
const off = summary(unlimited);
const report = {
  machine: { cpus: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
  at: new Date().toISOString(),
  note: "server and simulated devices share the machine's cores; each device: one check (SHA256SUMS + .gpg at once), downloads when offered (half the fleet is in a 50% rollout), one report; the per-address device rate limit is on (never refusing) unless deviceRateLimit is false; SQLite figures are medians of alternating rounds",
  sqlite: { rateLimitOn: on, rateLimitOff: off },
  // The limit's cost: with it over without it, medians of the same run.
  rateLimitCost: {
    requestsPerSecondRatio: Number((on.requestsPerSecond / off.requestsPerSecond).toFixed(3)),
    checkP99Ratio: Number((on.checkMsP99 / off.checkMsP99).toFixed(3)),
  },
  results,
};
mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/fleet.json"), `${JSON.stringify(report, null, 2)}\n`);
console.log(JSON.stringify(report, null, 2));
const bad = results.filter((r) => r.errors || r.lostReports || r.devicesInInventory !== DEVICES);
if (bad.length) {
  console.error(`fleet benchmark: ${bad.map((r) => r.backend).join(", ")} had errors or lost reports`);
  process.exitCode = 1;
}
