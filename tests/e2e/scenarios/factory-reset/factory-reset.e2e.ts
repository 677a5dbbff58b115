// Factory reset: the factory-reset UKI profile recreates /var empty (new LUKS volume, new SSH host
// keys); the device comes back reachable; the next ordinary boot does not reset again.
import { afterAll, expect, inject, it } from "vitest";
import { bootProfileOnce } from "../../harness/boot-entries.js";
import { dmUuidOf, expectNormalBoot } from "../../harness/checks.js";
import { reboot, Scenario, sh } from "../../harness/scenario.js";

const image = inject("sharedImage");
const s = new Scenario("factory-reset");
afterAll(() => s.finish());

const hostKey = "sudo -n cat /var/lib/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2";

it("wipes /var through the factory-reset profile and comes back reachable with new host keys", async () => {
  const booted = await s.restore("a", image);
  const { vm } = booted;
  let { ssh } = booted;
  const before = await s.step("the default boot is a normal one; note /var and host key", async () => {
    await expectNormalBoot(ssh);
    await sh(ssh, "echo precious > ~/data.txt && sync");
    return { luks: await dmUuidOf(ssh, "/var"), key: await sh(ssh, hostKey) };
  });
  await s.step("select the factory-reset profile for one boot", () => bootProfileOnce(ssh, "factory-reset"));
  ssh = await s.step("reboot into the factory reset", () => reboot(vm, ssh));
  await s.step("/var is new and empty, the host keys are new", async () => {
    expect(await sh(ssh, "cat /proc/cmdline")).toContain("systemd.factory_reset=1");
    expect(await sh(ssh, "test -e ~/data.txt && echo kept || echo gone")).toBe("gone");
    const luks = await dmUuidOf(ssh, "/var");
    expect(luks).toMatch(/^CRYPT-LUKS2-/);
    expect(luks).not.toBe(before.luks);
    expect(await sh(ssh, hostKey)).not.toBe(before.key);
  });
  await sh(ssh, "echo after-reset > ~/data2.txt && sync");
  ssh = await s.step("reboot normally", () => reboot(vm, ssh));
  await s.step("an ordinary boot keeps /var (the reset was one-shot)", async () => {
    await expectNormalBoot(ssh);
    expect(await sh(ssh, "cat ~/data2.txt")).toBe("after-reset");
  });
  ssh.close();
});
