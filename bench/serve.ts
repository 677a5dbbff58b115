// Update server benchmark (not a test): basalt serve against nginx serving the same bytes on this
// machine, one server at a time, each loaded by wrk (a separate process): device checks (SHA256SUMS
// and SHA256SUMS.gpg of a new machine-id per check) and downloads of a 60 MB root partition.
// Writes bench/results/serve.json with throughput, latency, errors and the basalt/nginx ratios.

import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer as createNetServer } from "node:net";
import { cpus, release as kernelRelease, loadavg, tmpdir, totalmem } from "node:os";
import { basename, dirname, join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { deviceFileUrl } from "../src/contract/urls.js";
import { type Daemon, run, spawnDaemon } from "../src/process/run.js";
import { parseSha256Sums } from "../src/release/sha256sums.js";
import { signedManifest, startTestServer, type TestServer } from "../tests/support/fleet-server.js";

const root = join(import.meta.dirname, "..");
const IMAGE = "demo";
const CHANNEL = "stable";
const VERSION = "2.0";
const BOOTED = "1.0";
const ARCH = "x86-64";
const ROOT_BYTES = 60e6;
const UKI_BYTES = 40e6;
const WARMUP_SECONDS = 3;
const SECONDS = 10;
const INDEX_CONNECTIONS = 16;
const ARTIFACT_CONNECTIONS = 4;
// The machine has two cores: basalt serves from one event loop, so nginx gets one worker (one event
// loop too) and wrk one thread, which leaves a core for the load generator in both cases.
const NGINX_WORKERS = 1;
const WRK_THREADS = 1;

type Load = "index" | "artifact";

interface WrkSummary {
  requests: number;
  bytes: number;
  durationUs: number;
  latencyUs: { p50: number; p99: number; max: number; mean: number };
  errors: { connect: number; read: number; write: number; timeout: number; status: number; non2xx?: number };
}

interface LoadResult {
  connections: number;
  seconds: number;
  requests: number;
  requestsPerSecond: number;
  MBPerSecond: number;
  /** Cores' worth of CPU the server used (1 = one core busy the whole time). */
  serverCpuCores: number;
  serverCpuUsPerRequest: number;
  /** All cores, everything on the machine (wrk, the server, anything else running). */
  machineBusyPercent: number;
  latencyMs: { p50: number; p99: number; max: number; mean: number };
  errors: { non2xx: number | null; status4xx5xx: number; connect: number; read: number; write: number; timeout: number };
}

const round = (n: number, digits = 1) => Number(n.toFixed(digits));
const ratio = (a: number, b: number) => (b > 0 ? round(a / b, 3) : null);
const sha256 = (b: Buffer | Uint8Array) => createHash("sha256").update(b).digest("hex");
const hex128 = () => randomBytes(16).toString("hex");
const devicePath = (machine: string, boot: string, file: string) =>
  deviceFileUrl("", { channel: CHANNEL, image: IMAGE, arch: ARCH, machine, booted: BOOTED, boot }, file);

// Everything to undo, kept where a signal handler can reach it: nginx runs in its own process
// group (spawnDaemon), so a Ctrl-C that stops this process would not stop it.
const dirs: string[] = [];
/** Removes `dir` at the end; only directories this run made (all named basalt-…) are ever removed. */
function removeLater(dir: string): void {
  if (!basename(dir).startsWith("basalt-")) throw new Error(`${dir} does not look like a benchmark directory; not removing it`);
  dirs.push(dir);
}
let nginx: Daemon | undefined;
let server: TestServer | undefined;
function removeNow(): void {
  nginx?.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
for (const [signal, code] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
] as const) {
  process.once(signal, () => {
    removeNow();
    process.exit(code);
  });
}

/** The first line a tool prints (nginx -v writes to stderr, wrk -v exits 1). */
async function firstOutputLine(command: string[]): Promise<string> {
  const r = await run(command, { check: false });
  return `${r.stdout}\n${r.stderr}`.trim().split("\n")[0] ?? "";
}

/** nginx and wrk from Debian's archive (the host's own apt sources), installed when missing. */
async function ensureTools(): Promise<void> {
  const missing = [];
  for (const [tool, flag] of [
    ["nginx", "-v"],
    ["wrk", "-v"],
  ] as const) {
    if ((await run([tool, flag], { check: false })).notFound) missing.push(tool);
  }
  if (!missing.length) return;
  if (process.getuid?.() !== 0) throw new Error(`${missing.join(" and ")} not found: install them with apt-get install ${missing.join(" ")} (as root)`);
  console.error(`installing ${missing.join(", ")} with apt-get`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(["apt-get", "update", "-q"], { env });
  // Another apt-get may hold the dpkg lock for a while; wait for it instead of failing.
  await run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", ...missing], { env });
}

async function freePort(): Promise<number> {
  const probe = createNetServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** A release of realistic size: incompressible bytes (an xz partition gains nothing on the wire) and a UKI. */
async function publishRelease(s: TestServer): Promise<{ rootName: string; rootSha256: string }> {
  const rootName = `${IMAGE}_${VERSION}.root-x86-64.${randomUUID()}.raw.xz`;
  const files: { name: string; kind: "root" | "uki"; bytes: Buffer }[] = [
    { name: rootName, kind: "root", bytes: randomBytes(ROOT_BYTES) },
    { name: `${IMAGE}_${VERSION}.efi`, kind: "uki", bytes: randomBytes(UKI_BYTES) },
  ];
  const m = await signedManifest(
    IMAGE,
    VERSION,
    files.map((f) => ({ name: f.name, kind: f.kind, size: f.bytes.length, sha256: sha256(f.bytes), installedSize: f.bytes.length })),
  );
  await s.fleet.beginRelease(m);
  for (const f of files) await s.fleet.putFile(IMAGE, VERSION, f.name, Readable.from([f.bytes]));
  await s.fleet.commitRelease(IMAGE, VERSION, "bench");
  await s.fleet.promote(IMAGE, CHANNEL, VERSION, "bench");
  return { rootName, rootSha256: m.files[0]?.sha256 ?? "" };
}

async function get(url: string): Promise<Buffer> {
  const r = await fetch(url);
  if (r.status !== 200) throw new Error(`GET ${url}: HTTP ${r.status}, expected 200`);
  return Buffer.from(await r.arrayBuffer());
}

/**
 * The wrk script of one load. Every index check comes from a new device (a random machine-id and
 * boot id): SHA256SUMS, then SHA256SUMS.gpg, which wrk sends on another connection at about the
 * same time, as systemd-pull does. Downloads also come from a new device each. The result is
 * printed as one JSON line from done(); only the index script has a response() hook (it counts
 * non-2xx answers exactly), because with one wrk buffers every body, 60 MB each for the download.
 */
function renderWrkScript(load: Load, rootName: string): string {
  const request =
    load === "index"
      ? `  n = n + 1
  if n % 2 == 1 then machine = hex128(); boot = hex128(); file = "SHA256SUMS" else file = "SHA256SUMS.gpg" end`
      : `  machine = hex128(); boot = hex128(); file = "${rootName}"`;
  const response =
    load === "index"
      ? `non2xx = 0
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end`
      : "";
  return `-- Generated by bench/serve.ts (${load} load).
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end
function init(args)
  math.randomseed(tonumber(args[1]) + id * 7919)
end
local n, machine, boot, file = 0, "", "", ""
local function hex128()
  return string.format("%08x%08x%08x%08x", math.random(0, 4294967295), math.random(0, 4294967295), math.random(0, 4294967295), math.random(0, 4294967295))
end
function request()
${request}
  return wrk.format("GET", "/v1/${CHANNEL}/${IMAGE}/${ARCH}/" .. machine .. "/${BOOTED}/" .. boot .. "/" .. file)
end
${response}
function done(summary, latency, requests)
  local non2xx = -1
  if response then
    non2xx = 0
    for _, t in ipairs(threads) do non2xx = non2xx + t:get("non2xx") end
  end
  local e = summary.errors
  io.write(string.format('BENCH-RESULT {"requests":%.0f,"bytes":%.0f,"durationUs":%.0f,' ..
    '"latencyUs":{"p50":%.0f,"p99":%.0f,"max":%.0f,"mean":%.0f},' ..
    '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"timeout":%.0f,"status":%.0f,"non2xx":%.0f}}\\n',
    summary.requests, summary.bytes, summary.duration, latency:percentile(50), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.timeout, e.status, non2xx))
end
`;
}

async function runWrk(script: string, url: string, connections: number, seconds: number, timeoutSeconds: number): Promise<WrkSummary> {
  const { stdout } = await run([
    "wrk",
    "-t",
    String(WRK_THREADS),
    "-c",
    String(connections),
    "-d",
    `${seconds}s`,
    "--timeout",
    `${timeoutSeconds}s`,
    "--latency",
    "-s",
    script,
    url,
    // A seed per run: a warm-up and its run must not poll as the same devices.
    "--",
    String(randomBytes(4).readUInt32LE()),
  ]);
  const line = stdout.split("\n").find((l) => l.startsWith("BENCH-RESULT "));
  if (!line) throw new Error(`wrk printed no result line:\n${stdout}`);
  return JSON.parse(line.slice("BENCH-RESULT ".length)) as WrkSummary;
}

/** Busy and total CPU time of the whole machine, in clock ticks (/proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const [, ...fields] = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/);
  const t = fields.map(Number);
  const total = t.slice(0, 8).reduce((a, b) => a + b, 0);
  // The 4th and 5th fields are idle and iowait; the rest is busy.
  return { busy: total - (t[3] ?? 0) - (t[4] ?? 0), total };
}

/** CPU seconds a process and its children (nginx's workers) used so far (/proc/<pid>/stat: utime, stime). */
function processTreeCpuSeconds(pid: number, ticksPerSecond: number): number {
  const own = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name; utime and stime are the 14th and 15th of the line.
  const after = own.slice(own.lastIndexOf(")") + 2).split(" ");
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  return (Number(after[11]) + Number(after[12])) / ticksPerSecond + children.reduce((sum, c) => sum + processTreeCpuSeconds(c, ticksPerSecond), 0);
}

/**
 * A warm-up (discarded), then the measured run. `serverCpu` reads the server's CPU seconds so far:
 * on a shared machine, CPU per request moves less than requests per second when something else runs.
 */
async function measure(name: string, load: Load, base: string, scripts: Record<Load, string>, serverCpu: () => number): Promise<LoadResult> {
  const connections = load === "index" ? INDEX_CONNECTIONS : ARTIFACT_CONNECTIONS;
  // A download takes well under a second here; wrk's 2 s default would count slow ones as errors.
  const timeout = load === "index" ? 5 : 60;
  console.error(`${name}: ${load}, ${connections} connections, ${WARMUP_SECONDS} s warm-up + ${SECONDS} s`);
  await runWrk(scripts[load], base, connections, WARMUP_SECONDS, timeout);
  const [cpu0, ticks0] = [serverCpu(), machineTicks()];
  const w = await runWrk(scripts[load], base, connections, SECONDS, timeout);
  const [cpu1, ticks1] = [serverCpu(), machineTicks()];
  const s = w.durationUs / 1e6;
  return {
    connections,
    seconds: round(s, 2),
    requests: w.requests,
    requestsPerSecond: round(w.requests / s),
    MBPerSecond: round(w.bytes / 1e6 / s),
    serverCpuCores: round((cpu1 - cpu0) / s, 2),
    serverCpuUsPerRequest: round(((cpu1 - cpu0) * 1e6) / Math.max(w.requests, 1)),
    machineBusyPercent: round((100 * (ticks1.busy - ticks0.busy)) / Math.max(ticks1.total - ticks0.total, 1)),
    latencyMs: {
      p50: round(w.latencyUs.p50 / 1000, 2),
      p99: round(w.latencyUs.p99 / 1000, 2),
      max: round(w.latencyUs.max / 1000, 2),
      mean: round(w.latencyUs.mean / 1000, 2),
    },
    errors: {
      non2xx: w.errors.non2xx !== undefined && w.errors.non2xx >= 0 ? w.errors.non2xx : null,
      status4xx5xx: w.errors.status,
      connect: w.errors.connect,
      read: w.errors.read,
      write: w.errors.write,
      timeout: w.errors.timeout,
    },
  };
}

function renderNginxConfig(o: { dir: string; port: number; indexDir: string; releaseDir: string }): string {
  const device = "^/v1/[^/]+/[^/]+/[^/]+/[0-9a-f]{32}/[^/]+/[0-9a-f]{32}";
  return `# Generated by bench/serve.ts: the same device URLs as basalt serve, as static files.
${process.getuid?.() === 0 ? "user root;  # the files sit in 0700 temporary directories\n" : ""}worker_processes ${NGINX_WORKERS};
daemon off;
pid ${o.dir}/nginx.pid;
error_log ${o.dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  # Node keeps a connection for any number of requests; nginx closes it after 1000 by default.
  keepalive_requests 1000000;
  types { }
  default_type application/octet-stream;
  client_body_temp_path ${o.dir}/temp/body;
  proxy_temp_path ${o.dir}/temp/proxy;
  fastcgi_temp_path ${o.dir}/temp/fastcgi;
  uwsgi_temp_path ${o.dir}/temp/uwsgi;
  scgi_temp_path ${o.dir}/temp/scgi;
  server {
    listen 127.0.0.1:${o.port};
    location ~ "${device}/(SHA256SUMS(\\.gpg)?)$" { alias ${o.indexDir}/$1; }
    location ~ "${device}/([A-Za-z0-9][A-Za-z0-9._+-]*)$" { alias ${o.releaseDir}/$1; }
  }
}
`;
}

async function startNginx(dir: string, probe: string): Promise<Daemon> {
  const conf = join(dir, "nginx.conf");
  // -e: nginx opens its default error log before it reads the configuration.
  const d = spawnDaemon(["nginx", "-p", dir, "-c", conf, "-e", join(dir, "error.log")], { logFile: join(dir, "nginx.out") });
  let gone = false;
  void d.exited.then(() => {
    gone = true;
  });
  for (let i = 0; i < 100 && !gone; i++) {
    const ok = await fetch(probe).then(
      (r) => r.arrayBuffer().then(() => r.ok),
      () => false,
    );
    if (ok) return d;
    await sleep(50);
  }
  d.kill("SIGKILL");
  throw new Error(`nginx did not start: see ${join(dir, "error.log")} and ${join(dir, "nginx.out")}`);
}

async function stopNginx(d: Daemon): Promise<void> {
  d.kill("SIGTERM");
  const stopped = await Promise.race([d.exited.then(() => true), sleep(5000).then(() => false)]);
  if (!stopped) d.kill("SIGKILL");
}

const started = performance.now();
// The machine may be shared: a load average well above 0 before the run means the figures are disturbed.
const loadBefore = loadavg().map((n) => round(n, 2));
try {
  await ensureTools();
  const work = mkdtempSync(join(tmpdir(), "basalt-bench-serve-"));
  removeLater(work);
  for (const d of ["index", "temp"]) mkdirSync(join(work, d));

  // One load generator stands for many devices: the per-address limit stays on (its cost is part
  // of the figures) but high enough never to refuse.
  server = await startTestServer({ listen: true, server: { deviceRateLimit: 1_000_000_000 } });
  // The helper's key and data directories are temporary too; found from what it hands back.
  removeLater(dirname(server.key.key));
  const { rootName, rootSha256 } = await publishRelease(server);
  const located = (await server.fleet.offeredFile({ channel: CHANNEL, image: IMAGE, arch: ARCH, machine: hex128(), booted: BOOTED, file: rootName }))?.artifact;
  if (located?.kind !== "file") throw new Error(`${rootName} is not in the local artifact store`);
  const releaseDir = dirname(located.path);
  removeLater(dirname(dirname(dirname(releaseDir)))); // releaseDir is <data>/releases/<id>/<version>

  // nginx serves what one device was shown; with the release on 100% of the channel every device is shown the same.
  const index = await get(server.url + devicePath(hex128(), hex128(), "SHA256SUMS"));
  const signature = await get(server.url + devicePath(hex128(), hex128(), "SHA256SUMS.gpg"));
  if (!parseSha256Sums(index.toString("utf8")).some((e) => e.name === rootName)) throw new Error(`the index does not list ${rootName}:\n${index}`);
  writeFileSync(join(work, "index/SHA256SUMS"), index);
  writeFileSync(join(work, "index/SHA256SUMS.gpg"), signature);
  const expected = { SHA256SUMS: sha256(index), "SHA256SUMS.gpg": sha256(signature), [rootName]: rootSha256 };
  /** Each server must answer every kind of request with 200 and the same bytes before it is measured. */
  const check = async (name: string, base: string) => {
    for (const [file, want] of Object.entries(expected)) {
      const got = sha256(await get(base + devicePath(hex128(), hex128(), file)));
      if (got !== want) throw new Error(`${name}: ${file} has SHA-256 ${got}, expected ${want}`);
    }
  };

  const scripts = { index: join(work, "index.lua"), artifact: join(work, "artifact.lua") };
  for (const load of ["index", "artifact"] as const) writeFileSync(scripts[load], renderWrkScript(load, rootName));

  await check("basalt", server.url);
  const basaltBase = `${server.url}/`;
  // The server runs in this process; while wrk runs, this process does nothing else.
  const basaltCpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const basalt = {
    index: await measure("basalt", "index", basaltBase, scripts, basaltCpu),
    artifact: await measure("basalt", "artifact", basaltBase, scripts, basaltCpu),
    devicesRecorded: (await server.fleet.db.devices({ image: IMAGE, limit: 1 })).total,
  };
  await server.close();
  server = undefined;

  const port = await freePort();
  const nginxBase = `http://127.0.0.1:${port}`;
  writeFileSync(join(work, "nginx.conf"), renderNginxConfig({ dir: work, port, indexDir: join(work, "index"), releaseDir }));
  nginx = await startNginx(work, nginxBase + devicePath(hex128(), hex128(), "SHA256SUMS"));
  await check("nginx", nginxBase);
  const ticksPerSecond = Number(await firstOutputLine(["getconf", "CLK_TCK"])) || 100;
  const { pid } = nginx;
  const nginxCpu = () => processTreeCpuSeconds(pid, ticksPerSecond);
  const nginxResult = {
    index: await measure("nginx", "index", `${nginxBase}/`, scripts, nginxCpu),
    artifact: await measure("nginx", "artifact", `${nginxBase}/`, scripts, nginxCpu),
  };
  await stopNginx(nginx);
  nginx = undefined;

  // The figures belong to the server code as it was: the commit, and whether src/ had changes on top.
  const commit = (await run(["git", "rev-parse", "--short", "HEAD"], { cwd: root, check: false })).stdout.trim();
  const changed = (await run(["git", "status", "--porcelain", "--", "src"], { cwd: root, check: false })).stdout.trim() !== "";
  const report = {
    date: new Date().toISOString(),
    source: { commit, uncommittedChangesInSrc: changed },
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? "",
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      kernel: kernelRelease(),
      node: process.version,
      nginx: await firstOutputLine(["nginx", "-v"]),
      wrk: (await firstOutputLine(["wrk", "-v"])).replace(/\s+Copyright.*$/, ""),
      loadAverage1m5m15m: { before: loadBefore, after: loadavg().map((n) => round(n, 2)) },
    },
    setup: {
      warmupSeconds: WARMUP_SECONDS,
      seconds: SECONDS,
      wrkThreads: WRK_THREADS,
      nginxWorkers: NGINX_WORKERS,
      index: {
        connections: INDEX_CONNECTIONS,
        requests: "a check per new device (random machine-id and boot id): GET …/SHA256SUMS, then …/SHA256SUMS.gpg of the same device on another connection",
        indexBytes: index.length,
        signatureBytes: signature.length,
      },
      artifact: { connections: ARTIFACT_CONNECTIONS, file: rootName, bytes: ROOT_BYTES, requests: "GET of the root partition by a new device each" },
      basalt:
        "tests/support/fleet-server.ts in this process: Fastify, SQLite fleet database (WAL), request logging off; each index request computes the device's view and records the poll in SQLite, each download is recorded too; files via @fastify/static",
      nginx: `nginx ${NGINX_WORKERS} worker, sendfile on, access_log off, keep-alive unlimited; two static files for the index (a snapshot of what basalt showed) and the artifact store directory for files`,
      notes: [
        "The index comparison is not like for like on purpose: nginx returns two static files, basalt decides per device which signed snapshot it sees and writes the poll to its database. The ratio is the price of that.",
        "Server and wrk share the machine's cores. wrk keeps connections open (devices open a new one per file, as each systemd-pull is its own process) and waits for each answer before the next request on that connection (latencies are those of a closed loop).",
        "serverCpuCores is the server's CPU time over the run's wall time (1 = one core). Well below 1 with machineBusyPercent near 100, the server was not what limited the run (wrk or other processes on the machine were); serverCpuUsPerRequest then compares the two servers' cost better than requests/s does.",
        "Ratios are basalt divided by nginx: below 1 for throughput, above 1 for latency and CPU per request mean basalt is slower.",
        "MB = 10^6 bytes. non2xx is counted exactly for the index; for downloads wrk counts only status >= 400 (a response() hook would make wrk buffer every 60 MB body). Before each run, each server answered every request kind with 200 and the same bytes.",
      ],
    },
    basalt,
    nginx: nginxResult,
    ratiosBasaltToNginx: {
      indexRequestsPerSecond: ratio(basalt.index.requestsPerSecond, nginxResult.index.requestsPerSecond),
      indexLatencyP50: ratio(basalt.index.latencyMs.p50, nginxResult.index.latencyMs.p50),
      indexLatencyP99: ratio(basalt.index.latencyMs.p99, nginxResult.index.latencyMs.p99),
      artifactMBPerSecond: ratio(basalt.artifact.MBPerSecond, nginxResult.artifact.MBPerSecond),
      artifactRequestsPerSecond: ratio(basalt.artifact.requestsPerSecond, nginxResult.artifact.requestsPerSecond),
      indexServerCpuPerRequest: ratio(basalt.index.serverCpuUsPerRequest, nginxResult.index.serverCpuUsPerRequest),
      artifactServerCpuPerRequest: ratio(basalt.artifact.serverCpuUsPerRequest, nginxResult.artifact.serverCpuUsPerRequest),
    },
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  mkdirSync(join(root, "bench/results"), { recursive: true });
  writeFileSync(join(root, "bench/results/serve.json"), `${JSON.stringify(report, null, 2)}\n`);
  console.log(JSON.stringify(report, null, 2));
} finally {
  // A failure to stop must not hide the error that got us here, nor keep the directories.
  if (nginx) await stopNginx(nginx).catch(() => undefined);
  await server?.close().catch(() => undefined);
  removeNow();
}
