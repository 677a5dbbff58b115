// The UKI and boot assessment: UKI file name, boot counting, Secure Boot signing, and the extra
// UKI profiles (factory reset, storage target mode) systemd-boot offers next to the main entry.
import { z } from "zod";
import type { IniSection } from "../generator/tree.js";
import type { Feature } from "./feature.js";

export const keys = {
  boot: z
    .strictObject({
      tries: z
        .number()
        .int()
        .min(0)
        .max(10)
        .default(3)
        .describe("Boot attempts a new UKI gets before systemd-boot falls back to the previous one (0 turns boot counting off)."),
    })
    .prefault({})
    .describe("Boot loader and UKI."),
} satisfies z.ZodRawShape;

export const toggles = {
  factory_reset: z.boolean().default(true).describe("Add a 'Factory reset' UKI profile: boots with systemd.factory_reset=1, which recreates /var empty."),
  storage_target: z.boolean().default(false).describe("Add a 'Storage target' UKI profile: exports the device's disks over NVMe-over-TCP (no authentication)."),
} satisfies z.ZodRawShape;

export const feature: Feature = {
  name: "boot",
  summary: "UKI naming and boot counting, Secure Boot signing, factory-reset and storage-target UKI profiles.",
  keys,
  toggles,
  render(a, tree) {
    // sysupdate's UKI pattern is <id>_@v+@l-@d.efi; mkosi appends the counter from /etc/kernel/tries.
    tree.set("Content", "UnifiedKernelImageFormat", a.boot.tries > 0 ? `${a.id}_${a.version}+&c` : `${a.id}_${a.version}`);
    if (a.boot.tries > 0) tree.image("etc/kernel/tries", `${a.boot.tries}\n`);
    tree.set("Validation", "SecureBoot", true);
    const profile = (file: string, id: string, title: string, cmdline: string[]) => {
      const sections: IniSection[] = [
        [
          "UKIProfile",
          [
            ["Profile", [`ID=${id}`, `TITLE=${title}`]],
            ["Cmdline", cmdline],
          ],
        ],
      ];
      tree.ini(`mkosi.uki-profiles/${file}`, sections);
    };
    if (a.features.factory_reset) {
      profile("10-factory-reset.conf", "factory-reset", "Factory reset", ["systemd.factory_reset=1"]);
    }
    if (a.features.storage_target) {
      // storage-target-mode.target runs systemd-storagetm in the initrd; it never mounts the root.
      profile("20-storage-target.conf", "storage-target", "Storage target mode", ["rd.systemd.unit=storage-target-mode.target", "ip=dhcp"]);
      tree.set("Content", "KernelModulesInclude", ["/nvmet\\.ko", "/nvmet-tcp\\.ko", "/configfs\\.ko"]);
      tree.set("Content", "KernelModulesInitrdInclude", ["default", "/nvmet\\.ko", "/nvmet-tcp\\.ko", "/virtio_net\\.ko", "/e1000e?\\.ko"]);
    }
  },
};
