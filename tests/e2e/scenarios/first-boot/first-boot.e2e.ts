// First boot: every promise of a fresh device, checked inside the guest.
import { afterAll, inject, it } from "vitest";
import { checkFirstBoot } from "../../harness/checks.js";
import { Scenario } from "../../harness/scenario.js";

const image = inject("sharedImage");
const s = new Scenario("first-boot");
afterAll(() => s.finish());

it("boots read-only from verity, with /var, identity, SSH, console and network as promised", async () => {
  // The first boot itself, saved once (by whichever scenario asks first) and continued here: the
  // same boot, so its journal, its partitions and its blessing are the first boot's.
  const { vm, ssh } = await s.restore("a", image);
  await checkFirstBoot(s, vm, ssh, image);
  ssh.close();
});
