// Fleet reporting: a small unit tells the update server (basalt serve) how the device is doing,
// after boot-complete.target (healthy or not), after every sysupdate run, and from the health
// check just before an unhealthy new version reboots. The server learns from these what polls
// cannot show: blessed or not, failed units, uptime, free space on /var, boot entries marked bad.
// Reports are authenticated with the `basalt.report-token` credential (see docs/fleet.md); a
// device without one does not report.
import { readFileSync } from "node:fs";
import { z } from "zod";
import { IMAGE_ARCHITECTURE } from "../contract/ids.js";
import { reportUrlTemplate } from "../contract/urls.js";
import type { Feature } from "./feature.js";

/** The systemd credential that carries the device's report token. */
export const REPORT_CREDENTIAL = "basalt.report-token";

export const keys = {
  report: z
    .strictObject({
      enabled: z.boolean().default(true).describe("Report boots, update runs and failed health checks to the update server (needs update.url)."),
    })
    .prefault({})
    .describe("What devices tell the fleet server about themselves."),
} satisfies z.ZodRawShape;

export const toggles = {} satisfies z.ZodRawShape;

// A shell script (the image has no other runtime); kept as a file so it reads as one.
const SCRIPT = readFileSync(new URL("./assets/report.sh", import.meta.url), "utf8");

export const feature: Feature = {
  name: "report",
  summary: "A unit that reports boots, update runs and failed health checks to the fleet server.",
  keys,
  toggles,
  render(a, tree) {
    if (!a.update.url || !a.report.enabled) return;
    tree.packages("curl");
    const script = SCRIPT.replaceAll("@CREDENTIAL@", REPORT_CREDENTIAL)
      // The script's shell variables stand in for the image id and machine-id.
      .replaceAll("@URL@", reportUrlTemplate(a.update.url, a.update.channel, IMAGE_ARCHITECTURE, { image: "$IMAGE_ID", machine: "$machine" }));
    tree.image("usr/lib/basalt/report", script, 0o755);
    tree.unit("basalt-report@.service", [
      [
        "Unit",
        [
          ["Description", "Report to the fleet server (%i)"],
          // multi-user.target would otherwise be ordered after this unit, and so after
          // boot-complete.target, which the health check orders after multi-user.target: a cycle
          // systemd breaks by dropping the health check and the blessing. Hence the explicit defaults.
          ["DefaultDependencies", "no"],
          ["Requires", "sysinit.target"],
          ["Conflicts", "shutdown.target"],
          ["Before", "shutdown.target"],
          // Pulled in here, so the health check runs on every boot, blessed or not, and is reported.
          ["Wants", "network-online.target boot-complete.target"],
          // After the blessing too, so the report says whether this boot was blessed.
          ["After", "sysinit.target basic.target network-online.target boot-complete.target basalt-health.service systemd-bless-boot.service"],
        ],
      ],
      [
        "Service",
        [
          ["Type", "oneshot"],
          ["ExecStart", "/usr/lib/basalt/report %i"],
          ["ImportCredential", REPORT_CREDENTIAL],
          ["RuntimeDirectory", "basalt-report-%i"],
          ["RuntimeDirectoryMode", "0700"],
        ],
      ],
      [
        "Install",
        [
          ["WantedBy", "multi-user.target"],
          ["DefaultInstance", "boot"],
        ],
      ],
    ]);
    tree.preset("enable basalt-report@.service boot");
    // After every sysupdate run, with its result ($MONITOR_SERVICE_RESULT). One instance each: a unit
    // both name counts as triggered twice, and systemd then passes no result at all.
    tree.imageIni("usr/lib/systemd/system/systemd-sysupdate.service.d/50-report.conf", [
      [
        "Unit",
        [
          ["OnSuccess", "basalt-report@update.service"],
          ["OnFailure", "basalt-report@update-failed.service"],
        ],
      ],
    ]);
    // From the health check, before an unhealthy new version reboots.
    tree.image("usr/lib/basalt/unhealthy.d/50-report", '#!/bin/sh\nexec /usr/lib/basalt/report unhealthy "$1"\n', 0o755);
    tree.imageIni("usr/lib/systemd/system/basalt-health.service.d/50-report.conf", [["Service", [["ImportCredential", REPORT_CREDENTIAL]]]]);
  },
};
