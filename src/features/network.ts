// systemd-networkd with DHCP on every wired link, systemd-resolved for names.
import type { z } from "zod";
import type { Feature } from "./feature.js";

export const keys = {} satisfies z.ZodRawShape;

export const toggles = {} satisfies z.ZodRawShape;

export const feature: Feature = {
  name: "network",
  summary: "DHCP on wired links with systemd-networkd; systemd-resolved.",
  keys,
  toggles,
  render(_a, tree) {
    tree.packages("systemd-resolved");
    tree.imageIni("usr/lib/systemd/network/80-basalt-wired.network", [
      [
        "Match",
        [
          ["Type", "ether"],
          ["Kind", "!*"],
        ],
      ],
      [
        "Network",
        [
          ["DHCP", "yes"],
          ["LinkLocalAddressing", "ipv6"],
        ],
      ],
      ["DHCPv4", [["UseDomains", "yes"]]],
    ]);
    tree.preset("enable systemd-networkd.service").preset("enable systemd-resolved.service");
  },
};
