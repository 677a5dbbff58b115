// Update benchmark (not a test): what an A/B update costs a device under this machine's QEMU
// (TCG here): bytes downloaded against bytes written to the slots, the time `systemd-sysupdate
// update` takes to fetch, decompress and write them, and the reboot into the new version.
// Uses the VM suite's images (built, or reused with BASALT_E2E_REUSE=1) and its update server.
// Writes bench/results/update.json.
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import type { ReleaseManifest } from "../src/contract/release-manifest.js";
import { detectAccel } from "../src/vm/accel.js";
import { E2E_ROOT, prepareImage } from "../tests/e2e/harness/image.js";
import { reboot, Scenario, sh, vmTools, waitBlessed } from "../tests/e2e/harness/scenario.js";
import { imageVersion, prepareV2, releaseAndPublish, SYSUPDATE, startUpdateServer } from "../tests/e2e/harness/updates.js";

const root = join(import.meta.dirname, "..");
const run = randomUUID();
const s = new Scenario("bench-update");
const v1 = await prepareImage("shared", join(E2E_ROOT, "fixtures", "appliance"), run);
const v2 = await prepareV2(v1);
const server = await startUpdateServer();
try {
  await releaseAndPublish(server, v2);
  const release = JSON.parse(readFileSync(join(v2.dir, "out", "releases", "2.0", "release.json"), "utf8")) as ReleaseManifest;
  const booted = await s.restore("a", v1);
  const { vm } = booted;
  let { ssh } = booted;
  await waitBlessed(ssh, "good");
  server.downloaded.bytes = 0;
  const start = performance.now();
  await sh(ssh, `${SYSUPDATE} update`);
  const applySeconds = (performance.now() - start) / 1000;
  const downloaded = server.downloaded.bytes;
  const rebootStart = performance.now();
  ssh = await reboot(vm, ssh);
  const rebootSeconds = (performance.now() - rebootStart) / 1000;
  if ((await imageVersion(ssh)) !== "2.0") throw new Error("the VM did not boot 2.0");
  ssh.close();
  const installed = release.files.reduce((n, f) => n + f.installedSize, 0);
  const report = {
    machine: { cpus: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, accel: await detectAccel(await vmTools()) },
    at: new Date().toISOString(),
    files: release.files.map((f) => ({ kind: f.kind, downloadBytes: f.size, installedBytes: f.installedSize })),
    downloadBytes: downloaded,
    installedBytes: installed,
    downloadToInstalledRatio: Number((downloaded / installed).toFixed(4)),
    applySeconds: Number(applySeconds.toFixed(1)),
    downloadMegabytesPerSecondWhileApplying: Number((downloaded / 1e6 / applySeconds).toFixed(1)),
    rebootToSshSeconds: Number(rebootSeconds.toFixed(1)),
  };
  mkdirSync(join(root, "bench/results"), { recursive: true });
  writeFileSync(join(root, "bench/results/update.json"), `${JSON.stringify(report, null, 2)}\n`);
  console.log(JSON.stringify(report, null, 2));
} finally {
  await server.close();
  await s.finish();
}
