// Secure Boot, enforced by the firmware: a VM whose Secure Boot firmware starts in setup mode (no
// keys) boots the image; systemd-boot enrolls the appliance's own keys from the ESP
// (loader/keys/auto, signed updates made at build time) and resets, and the image comes back with
// Secure Boot on, kernel lockdown, its own certificate in db, and every first-boot promise kept.
// The same image on firmware that holds only vendor (Microsoft) keys is refused before anything of
// it runs.

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, inject, it } from "vitest";
import { checkFirstBoot } from "../../harness/checks.js";
import { poll } from "../../harness/poll.js";
import { BOOT_TIMEOUT_MS, Scenario, sh } from "../../harness/scenario.js";

const image = inject("sharedImage");
const s = new Scenario("secure-boot");
afterAll(() => s.finish());

const EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const EFI_IMAGE_SECURITY = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

it("enrolls the appliance's keys in setup mode and boots with Secure Boot on; vendor keys refuse the image", async () => {
  const vm = await s.boot("setup", image, { secureBoot: "setup" });
  const ssh = await s.step("systemd-boot enrolls the keys, the firmware resets, the image boots to SSH", () => vm.waitForSsh(BOOT_TIMEOUT_MS * 2));
  await s.step("Secure Boot is enabled in user mode, and the kernel is locked down", async () => {
    expect(await sh(ssh, "bootctl status --no-pager 2>/dev/null | grep -i 'secure boot'")).toMatch(/enabled \(user\)/);
    // The variable's payload follows 4 bytes of attributes.
    expect(await sh(ssh, `od -An -tu1 -j4 /sys/firmware/efi/efivars/SecureBoot-${EFI_GLOBAL}`)).toBe("1");
    expect(await sh(ssh, `od -An -tu1 -j4 /sys/firmware/efi/efivars/SetupMode-${EFI_GLOBAL}`)).toBe("0");
    expect(await sh(ssh, "cat /sys/kernel/security/lockdown")).toContain("[integrity]");
  });
  await s.step("db holds the appliance's own certificate (the one the UKI and systemd-boot are signed with)", async () => {
    const cert = new X509Certificate(readFileSync(join(image.dir, "keys", "db.crt")));
    const db = Buffer.from(await sh(ssh, `base64 -w0 /sys/firmware/efi/efivars/db-${EFI_IMAGE_SECURITY}`), "base64");
    expect(db.includes(cert.raw)).toBe(true);
  });
  await checkFirstBoot(s, vm, ssh, image);
  ssh.close();

  const vendor = await s.boot("vendor", image, { secureBoot: "vendor" });
  await s.step("firmware with only vendor keys refuses the image: nothing of it runs, no SSH", async () => {
    await poll("the firmware to refuse the boot loader", async () => (/Access Denied|Security Violation/i.test(vendor.serialSince(0)) ? true : undefined), {
      timeoutMs: BOOT_TIMEOUT_MS,
      intervalMs: 2000,
    });
    const console = vendor.serialSince(0);
    expect(console).not.toMatch(/Linux version|systemd-boot|Booting/);
    await expect(vendor.waitForSsh(20_000)).rejects.toThrow();
  });
});
