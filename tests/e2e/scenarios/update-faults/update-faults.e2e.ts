// Updates that must not happen, and one cut short: the stock client refuses a release published by
// an intruder with indexes signed by another key (the server, which holds no key, serves it as it
// serves any release), a corrupted artifact and a damaged index signature, each time leaving the
// device on its version with nothing of the new one installed; the plug is pulled in the middle of a
// download and the device boots its old version; then the same update goes through.
import { afterAll, expect, inject, it } from "vitest";
import type { SshSession } from "../../../../src/vm/ssh.js";
import { expectNormalBoot, partitionLabels } from "../../harness/checks.js";
import { BOOT_TIMEOUT_MS, reboot, Scenario, sh, waitBlessed } from "../../harness/scenario.js";
import { imageVersion, prepareV2, publishIntruderRelease, SYSUPDATE, serveRelease, startUpdateServer, sysupdateUpdate, ukis } from "../../harness/updates.js";

const shared = inject("sharedImage");
const s = new Scenario("update-faults");
afterAll(() => s.finish());

const ROOT_FILE = /\.root-x86-64\.[0-9a-f-]{36}\.raw\.xz$/;

it("refuses bad updates, survives a power cut mid-update, then updates", async () => {
  const v2 = await s.step("build v2", () => prepareV2(shared));
  const intruder = await s.step("start basalt serve and publish 2.0 as an intruder released it: its indexes signed with another key", async () => {
    const server = await startUpdateServer();
    s.defer(() => server.close());
    await publishIntruderRelease(server, v2);
    return server;
  });
  const booted = await s.restore("a", shared);
  const { vm } = booted;
  let { ssh } = booted;
  const before = await s.step("v1 is blessed; record its slots and boot entries; write data to /var", async () => {
    await waitBlessed(ssh, "good");
    await sh(ssh, "echo kept > ~/data.txt && sync");
    return { labels: await partitionLabels(ssh), ukis: await ukis(ssh) };
  });
  expect(before.labels.filter((l) => l === "_empty")).toHaveLength(3);

  /** The device is exactly as before: v1 booted, no v2 boot entry, no slot labelled for v2. */
  const unchanged = async (session: SshSession) => {
    expect(await imageVersion(session)).toBe("1.0");
    expect(await ukis(session)).toEqual(before.ukis);
    expect(await partitionLabels(session)).toEqual(before.labels);
  };
  const refused = async (why: RegExp) => {
    const r = await ssh.exec(`${SYSUPDATE} update 2>&1`, 600_000);
    expect(r.code, r.stdout).not.toBe(0);
    expect(r.stdout).toMatch(why);
    await unchanged(ssh);
  };

  await s.step("a release whose indexes are signed by another key is refused", async () => {
    await refused(/gpg: Can't check signature: No public key/);
    await intruder.close();
  });
  const srv = await serveRelease(s, v2, { released: true });
  await s.step("a UKI with one flipped byte is refused once downloaded; nothing of v2 is installed", async () => {
    srv.faults.corrupt = /\.efi$/;
    await refused(/Checksum of \S+e2e_2\.0\.efi file did not check out/);
    srv.faults.corrupt = undefined;
  });
  await s.step("an index with a damaged signature is refused", async () => {
    const good = Buffer.from(await (await fetch(`${srv.url}/v1/stable/e2e/x86-64/${"0".repeat(32)}/1.0/SHA256SUMS.gpg`)).arrayBuffer());
    const bad = Buffer.from(good);
    bad[bad.length - 3] = (bad[bad.length - 3] ?? 0) ^ 0x55;
    srv.faults.signature = bad;
    await refused(/gpg: BAD signature/);
    srv.faults.signature = undefined;
  });

  await s.step("the plug is pulled while v2's root is downloading", async () => {
    const cutAt = 8e6;
    const halfway = new Promise<void>((resolve) => {
      srv.faults.throttle = { match: ROOT_FILE, bytesPerSecond: 2e6, onBytes: (sent) => sent >= cutAt && resolve() };
    });
    const running = ssh.exec(`${SYSUPDATE} update`, 900_000).catch(() => undefined);
    await Promise.race([halfway, running.then(() => Promise.reject(new Error("the update ended before the cut")))]);
    await vm.powerOff();
    ssh.close();
    srv.faults.throttle = undefined;
  });
  ssh = await s.step("the device boots v1 again, untouched", async () => {
    await vm.start();
    const next = await vm.waitForSsh(BOOT_TIMEOUT_MS);
    await expectNormalBoot(next);
    await unchanged(next);
    // v1 was blessed on its first boot: this boot is not counted.
    await waitBlessed(next, "clean");
    expect(await sh(next, "cat ~/data.txt")).toBe("kept");
    return next;
  });
  await s.step("the same update now succeeds", async () => {
    await sysupdateUpdate(ssh);
    expect(await ukis(ssh)).toContain("e2e_2.0+3-0.efi");
    expect(await partitionLabels(ssh)).toEqual(expect.arrayContaining(["e2e_2.0", "e2e_2.0_v", "e2e_2.0_s"]));
  });
  ssh = await s.step("reboot into v2", () => reboot(vm, ssh));
  await s.step("v2 runs and is blessed; /var kept", async () => {
    expect(await imageVersion(ssh)).toBe("2.0");
    await waitBlessed(ssh, "good");
    expect(await sh(ssh, "cat ~/data.txt")).toBe("kept");
  });
  ssh.close();
});
