// /var keeps what is written to it, across reboots, until a factory reset: the factory-reset UKI
// profile recreates /var empty (new LUKS volume, new SSH host keys) and the device comes back
// reachable; what is written after it survives the next, ordinary boot, which does not reset
// again, and so does the journal. /usr and /etc refuse writes, even from root.
import { randomUUID } from "node:crypto";
import { afterAll, expect, inject, it } from "vitest";
import { bootProfileOnce } from "../../harness/boot-entries.js";
import { dmUuidOf, expectNormalBoot } from "../../harness/checks.js";
import { reboot, Scenario, sh, shFails } from "../../harness/scenario.js";

const image = inject("sharedImage");
const s = new Scenario("factory-reset");
afterAll(() => s.finish());

const hostKey = "sudo -n cat /var/lib/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2";

it("keeps /var across an ordinary reboot, wipes it through the factory-reset profile, and refuses writes to /usr and /etc", async () => {
  const booted = await s.restore("a", image);
  const { vm } = booted;
  let { ssh } = booted;
  const before = await s.step("the default boot is a normal one; note /var and host key", async () => {
    await expectNormalBoot(ssh);
    await sh(ssh, "echo precious > ~/data.txt && sync");
    return { luks: await dmUuidOf(ssh, "/var"), key: await sh(ssh, hostKey) };
  });
  await s.step("writes under /usr and /etc fail, even as root", async () => {
    expect((await shFails(ssh, "sudo -n touch /usr/basalt-probe")).stderr).toMatch(/Read-only file system/);
    expect((await shFails(ssh, "sudo -n touch /etc/basalt-probe")).stderr).toMatch(/Read-only file system/);
  });
  await s.step("select the factory-reset profile for one boot", () => bootProfileOnce(ssh, "factory-reset"));
  ssh = await s.step("reboot into the factory reset", () => reboot(vm, ssh));
  const token = randomUUID();
  await s.step("/var is new and empty, the host keys are new; write a file under /var/home", async () => {
    expect(await sh(ssh, "cat /proc/cmdline")).toContain("systemd.factory_reset=1");
    expect(await sh(ssh, "test -e ~/data.txt && echo kept || echo gone")).toBe("gone");
    const luks = await dmUuidOf(ssh, "/var");
    expect(luks).toMatch(/^CRYPT-LUKS2-/);
    expect(luks).not.toBe(before.luks);
    expect(await sh(ssh, hostKey)).not.toBe(before.key);
    expect(await sh(ssh, `echo ${token} > ~/persist.txt && sync && realpath ~/persist.txt`)).toMatch(/^\/var\/home\//);
  });
  ssh = await s.step("reboot normally", () => reboot(vm, ssh));
  await s.step("an ordinary boot keeps /var (the reset was one-shot): the file survived, and the journal of the previous boot", async () => {
    await expectNormalBoot(ssh);
    expect(await sh(ssh, "cat ~/persist.txt")).toBe(token);
    expect(Number(await sh(ssh, "sudo -n journalctl --list-boots | grep -cE '^ *-?[0-9]+ '"))).toBeGreaterThanOrEqual(2);
  });
  ssh.close();
});
