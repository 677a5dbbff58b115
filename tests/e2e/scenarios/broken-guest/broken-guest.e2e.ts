// The suite catches what it claims to: on an image whose /etc is made writable (an overlay a unit
// mounts once the system is up), the first-boot checks must fail, at the /etc step.
import { afterAll, expect, inject, it } from "vitest";
import { checkFirstBoot } from "../../harness/checks.js";
import { prepareImage } from "../../harness/image.js";
import { poll } from "../../harness/poll.js";
import { BOOT_TIMEOUT_MS, Scenario } from "../../harness/scenario.js";

const shared = inject("sharedImage");
const s = new Scenario("broken-guest");
const probe = new Scenario("broken-guest-first-boot-checks");
afterAll(async () => {
  await probe.finish();
  await s.finish();
});

it("fails the first-boot checks when /etc is writable", async () => {
  const image = await s.step("build the broken appliance", () => prepareImage("broken-guest", import.meta.dirname, shared.run));
  const vm = await s.boot("a", image);
  const ssh = await s.step("first boot to SSH", () => vm.waitForSsh(BOOT_TIMEOUT_MS));
  await s.step("the breakage is in place", () =>
    poll("break-etc.service to run", async () => ((await ssh.exec("systemctl is-active break-etc.service")).stdout.trim() === "active" ? true : undefined), {
      timeoutMs: 120_000,
      intervalMs: 2000,
    }),
  );
  const failure = await s.step("run the first-boot checks", () =>
    checkFirstBoot(probe, vm, ssh, image).then(
      () => undefined,
      (e: Error) => e,
    ),
  );
  expect(failure?.message).toMatch(/step "\/etc is read-only" failed/);
  ssh.close();
});
