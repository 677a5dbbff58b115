// First boot: every promise of a fresh device, checked inside the guest.
import { afterAll, inject, it } from "vitest";
import { checkFirstBoot } from "../../harness/checks.js";
import { BOOT_TIMEOUT_MS, Scenario } from "../../harness/scenario.js";

const image = inject("sharedImage");
const s = new Scenario("first-boot");
afterAll(() => s.finish());

it("boots read-only from verity, with /var, identity, SSH, console and network as promised", async () => {
  const vm = await s.boot("a", image);
  const ssh = await s.step("first boot to SSH", () => vm.waitForSsh(BOOT_TIMEOUT_MS));
  await checkFirstBoot(s, vm, ssh, image);
  ssh.close();
});
