// A/B updates with stock systemd-sysupdate 257: transfer definitions for root, verity, verity-sig
// and the UKI (last, so a device only boots a version whose partitions are all in place), the
// appliance's update key as the only key gpg trusts, and a timer that runs only from a good boot.
import { z } from "zod";
import * as ids from "../contract/ids.js";
import { transferSourcePath } from "../contract/urls.js";
import { timespan } from "../definition/types.js";
import type { IniSection } from "../generator/tree.js";
import { slotLabels } from "./disk.js";
import type { Feature } from "./feature.js";

export const keys = {
  update: z
    .strictObject({
      url: z
        .url({ protocol: /^https?$/ })
        .optional()
        .describe("Base URL of the update server (basalt serve). Without it the image carries no update configuration."),
      channel: ids.channel.default("stable").describe("Channel the device follows."),
      interval: timespan()
        .default("6h")
        .describe("How often a device checks for an update (plus a random delay of up to the same time, so a fleet spreads out)."),
    })
    .prefault({})
    .describe("Where and how often devices look for updates."),
} satisfies z.ZodRawShape;

export const toggles = {} satisfies z.ZodRawShape;

export const feature: Feature = {
  name: "updates",
  summary: "systemd-sysupdate transfers for the A/B slots and the UKI, the update key as the only trusted key, a timer.",
  keys,
  toggles,
  crossCheck(a, ctx) {
    if (a.update.url && !a.features.ab_updates) {
      return [{ file: ctx.file, line: ctx.lineOf(["update", "url"]), key: "update.url", message: "updates need features.ab_updates = true (a second slot)" }];
    }
    return [];
  },
  render(a, tree, ctx) {
    if (!a.update.url) return;
    // Channel, image id, architecture, machine-id, booted version and boot id in the path: the server
    // gives each device its own view and learns from polls alone who runs what and who rebooted.
    const path = transferSourcePath(a.update.url, a.update.channel);
    const labels = slotLabels(a.id, "@v");
    tree.packages("systemd-container", "gpg");
    const partition = (file: string, type: string, suffix: string, label: string) => {
      const sections: IniSection[] = [
        ["Transfer", [["ProtectVersion", "%A"]]],
        [
          "Source",
          [
            ["Type", "url-file"],
            ["Path", path],
            ["MatchPattern", `${a.id}_@v.${type}-%a${suffix}.@u.raw.xz`],
          ],
        ],
        [
          "Target",
          [
            ["Type", "partition"],
            ["Path", "auto"],
            ["MatchPartitionType", `${type}${suffix}`],
            ["MatchPattern", label],
            ["PartitionFlags", "0"],
            ["ReadOnly", "1"],
            ["InstancesMax", "2"],
          ],
        ],
      ];
      tree.imageIni(`usr/lib/sysupdate.d/${file}`, sections);
    };
    partition("10-root.transfer", "root", "", labels.root);
    partition("11-root-verity.transfer", "root", "-verity", labels.verity);
    partition("12-root-verity-sig.transfer", "root", "-verity-sig", labels.signature);
    const tries = a.boot.tries;
    tree.imageIni("usr/lib/sysupdate.d/90-uki.transfer", [
      ["Transfer", [["ProtectVersion", "%A"]]],
      [
        "Source",
        [
          ["Type", "url-file"],
          ["Path", path],
          ["MatchPattern", `${a.id}_@v.efi`],
        ],
      ],
      [
        "Target",
        [
          ["Type", "regular-file"],
          ["Path", "/EFI/Linux"],
          ["PathRelativeTo", "boot"],
          ["MatchPattern", tries > 0 ? [`${a.id}_@v+@l-@d.efi`, `${a.id}_@v+@l.efi`, `${a.id}_@v.efi`].join(" ") : `${a.id}_@v.efi`],
          ["Mode", "0644"],
          ...(tries > 0
            ? ([
                ["TriesLeft", String(tries)],
                ["TriesDone", "0"],
              ] as [string, string][])
            : []),
          ["InstancesMax", "2"],
        ],
      ],
    ]);
    // /etc/systemd/import-pubring.gpg, when present, is the only keyring systemd-pull uses: the
    // vendor one trusts other distributions' keys.
    tree.copy("image/etc/systemd/import-pubring.gpg", `${ctx.dir}/keys/update.pgp.keyring`, "keys/update.pgp.keyring", { optional: true });
    // Updates start only from a good boot, so the fallback is never replaced by an unproven version.
    tree.imageIni("usr/lib/systemd/system/systemd-sysupdate.service.d/10-basalt.conf", [
      [
        "Unit",
        [
          ["Requires", "boot-complete.target"],
          ["After", "boot-complete.target network-online.target"],
          ["Wants", "network-online.target"],
        ],
      ],
    ]);
    tree.imageIni("usr/lib/systemd/system/systemd-sysupdate.timer.d/10-basalt.conf", [
      [
        "Timer",
        [
          ["OnCalendar", ""],
          ["OnBootSec", "5min"],
          ["OnUnitActiveSec", a.update.interval],
          ["RandomizedDelaySec", a.update.interval],
        ],
      ],
    ]);
    tree.preset("enable systemd-sysupdate.timer");
    // It reboots whenever a newer version is installed, even one marked bad: a nightly reboot loop
    // after a rollback. Rebooting into an update is the operator's policy, not a timer's. Masked:
    // Debian's package enables it when installed, and a preset does not undo that in the image.
    tree.imageSymlink("etc/systemd/system/systemd-sysupdate-reboot.timer", "/dev/null");
  },
};
