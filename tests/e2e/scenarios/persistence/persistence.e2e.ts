// Persistence: /var keeps data across a reboot; /usr and /etc refuse writes.
import { randomUUID } from "node:crypto";
import { afterAll, expect, inject, it } from "vitest";
import { reboot, Scenario, sh, shFails } from "../../harness/scenario.js";

const image = inject("sharedImage");
const s = new Scenario("persistence");
afterAll(() => s.finish());

it("keeps /var/home across a reboot and refuses writes to /usr and /etc", async () => {
  const booted = await s.restore("a", image);
  const { vm } = booted;
  let { ssh } = booted;
  const token = randomUUID();
  await s.step("write a file under /var/home", () => sh(ssh, `echo ${token} > ~/persist.txt && sync && realpath ~/persist.txt`));
  await s.step("writes under /usr and /etc fail, even as root", async () => {
    expect((await shFails(ssh, "sudo -n touch /usr/basalt-probe")).stderr).toMatch(/Read-only file system/);
    expect((await shFails(ssh, "sudo -n touch /etc/basalt-probe")).stderr).toMatch(/Read-only file system/);
  });
  ssh = await s.step("reboot", () => reboot(vm, ssh));
  await s.step("the file survived the reboot", async () => {
    expect(await sh(ssh, "cat ~/persist.txt")).toBe(token);
    expect(await sh(ssh, "realpath ~/persist.txt")).toMatch(/^\/var\/home\//);
  });
  await s.step("the journal of the previous boot is kept on /var", async () => {
    expect(Number(await sh(ssh, "sudo -n journalctl --list-boots | grep -cE '^ *-?[0-9]+ '"))).toBeGreaterThanOrEqual(2);
  });
  ssh.close();
});
