// What a device tells the server about itself (the report unit in the image posts it after
// boot-complete.target, after each sysupdate run, and when the health check fails). The server
// trusts none of it beyond this shape: everything is bounded, names are checked.
import { z } from "zod";
import { bootId, version } from "./ids.js";

const UNIT = /^[A-Za-z0-9@_.:\\-]{1,256}$/;

export const deviceReportSchema = z.strictObject({
  /** Why the device reports: a finished boot, a sysupdate run, a failed health check. */
  event: z.enum(["boot", "update", "unhealthy"]),
  version,
  boot_id: bootId,
  /** systemd-bless-boot status: good, bad, indeterminate or clean (no counting). */
  blessed: z.enum(["good", "bad", "indeterminate", "clean", "unknown"]).default("unknown"),
  healthy: z.boolean(),
  reason: z.string().max(512).optional(),
  failed_units: z.array(z.string().regex(UNIT)).max(256).default([]),
  uptime_seconds: z.number().nonnegative().max(1e10),
  var_free_bytes: z
    .number()
    .int()
    .nonnegative()
    .max(2 ** 62)
    .optional(),
  /** The UKI file names in /EFI/Linux, boot counters included (`+0-3` marks a version as bad). */
  entries: z.array(z.string().max(255)).max(32).default([]),
  /** The result of the sysupdate run this report follows (systemd's $MONITOR_SERVICE_RESULT). */
  update_result: z.string().max(64).optional(),
});

export type DeviceReport = z.infer<typeof deviceReportSchema>;

/** Versions the boot loader has given up on: entries `<id>_<version>+0-<n>.efi`. */
export function badVersions(image: string, entries: readonly string[]): string[] {
  const out: string[] = [];
  for (const e of entries) {
    if (!e.startsWith(`${image}_`)) continue;
    const m = /^(.+)\+0(-\d+)?\.efi$/.exec(e.slice(image.length + 1));
    if (m?.[1] && version.safeParse(m[1]).success) out.push(m[1]);
  }
  return out;
}

/** Versions whose UKI is installed (blessed, in trial, or given up on): `<id>_<version>[+…].efi`. */
export function installedVersions(image: string, entries: readonly string[]): string[] {
  const out: string[] = [];
  for (const e of entries) {
    if (!e.startsWith(`${image}_`)) continue;
    const m = /^(.+?)(\+\d+(-\d+)?)?\.efi$/.exec(e.slice(image.length + 1));
    if (m?.[1] && version.safeParse(m[1]).success) out.push(m[1]);
  }
  return out;
}
