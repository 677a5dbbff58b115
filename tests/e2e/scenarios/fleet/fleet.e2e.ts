// A staged rollout on a fleet of two: both VMs run v1 (different SMBIOS UUIDs, so different
// machine-ids, each provisioned with its own report token as a credential); v2 goes out to 50%,
// with the UUIDs chosen so that one VM is in and one is out. Only that one updates and reboots into
// v2; raising the rollout to 100% makes the other install it. The inventory shows both, from their
// polls and reports.
// Release files live in an S3-compatible bucket (s3rver on the host): the server answers downloads
// with a redirect to a presigned URL, which systemd-pull follows.
import { randomUUID } from "node:crypto";
import { afterAll, expect, inject, it } from "vitest";
import { REPORT_CREDENTIAL } from "../../../../src/features/report.js";
import type { Device } from "../../../../src/fleet/inventory.js";
import { rolloutBucket } from "../../../../src/fleet/rollout.js";
import type { SshSession } from "../../../../src/vm/ssh.js";
import { poll } from "../../harness/poll.js";
import { BOOT_TIMEOUT_MS, reboot, Scenario, sh, waitBlessed } from "../../harness/scenario.js";
import { imageVersion, OPERATOR_TOKEN, prepareV2, serveRelease, ukis } from "../../harness/updates.js";

const shared = inject("sharedImage");
const s = new Scenario("fleet");
afterAll(() => s.finish());

const machineOf = (uuid: string) => uuid.replaceAll("-", "").toLowerCase();
/** A random SMBIOS UUID whose machine-id is (or is not) within the first `percent` of v2's rollout. */
function uuidFor(inRollout: boolean, percent: number): string {
  for (;;) {
    const uuid = randomUUID();
    if (rolloutBucket(shared.id, "2.0", machineOf(uuid)) < percent === inRollout) return uuid;
  }
}

/** The stock timer's run: the service, not the binary, so the report after it fires too. */
const runSysupdate = (ssh: SshSession) => sh(ssh, "sudo -n systemctl start --wait systemd-sysupdate.service", 600_000);

it("rolls v2 out to half of a two-device fleet, then to all, with both in the inventory", async () => {
  const v2 = await s.step("build v2", () => prepareV2(shared));
  const srv = await serveRelease(s, v2, { rollout: { percent: 50 }, bucket: true });
  const uuids = { in: uuidFor(true, 50), out: uuidFor(false, 50) };
  const credentials = (uuid: string) => ({ [REPORT_CREDENTIAL]: srv.tokenFor(shared.id, machineOf(uuid)) });
  const vmIn = await s.create("in", shared, { uuid: uuids.in, credentials: credentials(uuids.in) });
  const vmOut = await s.create("out", shared, { uuid: uuids.out, credentials: credentials(uuids.out) });
  await s.step("start both VMs", () => Promise.all([vmIn.start(), vmOut.start()]));
  let [sshIn, sshOut] = await s.step("both boot v1 to SSH", () => Promise.all([vmIn.waitForSsh(BOOT_TIMEOUT_MS * 2), vmOut.waitForSsh(BOOT_TIMEOUT_MS * 2)]));
  if (!sshIn || !sshOut) throw new Error("no SSH session");

  const device = async (uuid: string) => srv.fleet.db.device(shared.id, machineOf(uuid));
  /** Waits until the server's record of a device satisfies `ok` (reports arrive a little after the boot). */
  const inventory = (uuid: string, ok: (d: Device) => boolean, what: string) =>
    poll(
      `the inventory to show ${what}`,
      async () => {
        const d = await device(uuid);
        if (d && ok(d)) return d;
        throw new Error(JSON.stringify(d));
      },
      { timeoutMs: 180_000 },
    );

  await s.step("both are blessed and report themselves healthy on v1", async () => {
    await Promise.all([waitBlessed(sshIn as SshSession, "good"), waitBlessed(sshOut as SshSession, "good")]);
    for (const u of [uuids.in, uuids.out]) {
      const d = await inventory(u, (x) => x.report?.event === "boot" && x.bootedVersion === "1.0", "a boot report on 1.0");
      expect(d.healthy).toBe(true);
      expect(d.report?.failed_units).toEqual([]);
    }
  });

  await s.step("sysupdate on both: only the device inside the 50% installs v2", async () => {
    await Promise.all([runSysupdate(sshIn as SshSession), runSysupdate(sshOut as SshSession)]);
    expect(await ukis(sshIn as SshSession)).toContain("e2e_2.0+3-0.efi");
    expect((await ukis(sshOut as SshSession)).some((f) => f.startsWith("e2e_2.0"))).toBe(false);
    const a = await inventory(uuids.in, (x) => x.report?.event === "update", "the report after the update run");
    expect(a.downloadedVersion).toBe("2.0");
    expect(a.report?.update_result).toBe("success");
    const b = await inventory(uuids.out, (x) => x.report?.event === "update", "the report after the update run");
    expect(b.downloadedVersion).toBeNull();
    // The server recorded the downloads but sent none of the bytes: they came from the bucket.
    expect(srv.downloaded.files).toEqual([]);
  });

  sshIn = await s.step("the updated device reboots into v2", () => reboot(vmIn, sshIn as SshSession));
  await s.step("it runs v2, blessed, and the inventory says so", async () => {
    expect(await imageVersion(sshIn as SshSession)).toBe("2.0");
    await waitBlessed(sshIn as SshSession, "good");
    const d = await inventory(uuids.in, (x) => x.bootedVersion === "2.0" && x.report?.event === "boot" && x.report.version === "2.0", "v2 reported");
    expect(d).toMatchObject({ healthy: true, reboots: 1, rolledBack: [] });
    expect(d.report?.blessed).toBe("good");
  });

  await s.step("raise the rollout to 100% through the operator API", async () => {
    const r = await fetch(`${srv.url}/api/v1/rollouts/${shared.id}/stable/2.0`, {
      method: "POST",
      headers: { authorization: `Bearer ${OPERATOR_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ percent: 100 }),
    });
    expect(r.status, await r.clone().text()).toBe(200);
    expect((await r.json()).percent).toBe(100);
  });
  await s.step("the other device now installs v2", () =>
    // Its view of the channel is held for a short while after a check: run the timer's service until it takes v2.
    poll(
      "v2 to be installed after the raise",
      async () => {
        await runSysupdate(sshOut as SshSession);
        return (await ukis(sshOut as SshSession)).includes("e2e_2.0+3-0.efi") ? true : undefined;
      },
      { timeoutMs: 300_000, intervalMs: 5000 },
    ),
  );
  // Its reboot into v2 proves nothing the first device's did not (and the README scenario's does).
  await s.step("the inventory shows both: one running v2, healthy; the other downloaded it", async () => {
    // Its authenticated report says so (the download alone is no evidence: the device was first
    // seen after the release was offered); the report of its first run, at 50 %, said nothing yet.
    await inventory(uuids.out, (x) => x.downloadedVersion === "2.0" && x.downloadedEvidence, "the other device's report that it installed v2");
    const list = await srv.fleet.db.devices({ image: shared.id });
    expect(list.total).toBe(2);
    const byMachine = new Map(list.devices.map((d) => [d.machine, d]));
    expect(byMachine.get(machineOf(uuids.in))).toMatchObject({ bootedVersion: "2.0", healthy: true, duplicate: false, rolledBack: [] });
    expect(byMachine.get(machineOf(uuids.out))).toMatchObject({
      bootedVersion: "1.0",
      downloadedVersion: "2.0",
      healthy: true,
      duplicate: false,
      rolledBack: [],
    });
    const stats = await srv.fleet.db.releaseStats(shared.id, "2.0");
    expect(stats).toMatchObject({ adopters: 2, running: 1, failures: 0 });
  });
  sshIn?.close();
  sshOut?.close();
});
