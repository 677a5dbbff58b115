// Value types shared by feature keys.
import { z } from "zod";

const SIZE = /^([0-9]+)([KMGT]?)$/;
const UNITS: Record<string, number> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** A size such as "512M" or "2G" (binary units). */
export const size = () => z.string().regex(SIZE, 'expected a size such as "512M" or "2G"');

export function sizeBytes(s: string): number {
  const m = SIZE.exec(s);
  if (!m) throw new Error(`not a size: ${s}`);
  return Number(m[1]) * (UNITS[m[2] ?? ""] ?? 1);
}

/** A path relative to the definition's directory. */
export const relativePath = () =>
  z
    .string()
    .min(1)
    .refine((p) => !p.startsWith("/"), "expected a path relative to the definition's directory");

/** A Debian package name. */
export const packageName = () => z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/, "not a Debian package name");

const TIMESPAN = /^(\d+)(s|min|h|d|w)$/;
const SPAN_SECONDS: Record<string, number> = { s: 1, min: 60, h: 3600, d: 86400, w: 604800 };

/** A systemd-style time span with one unit: "30s", "10min", "6h", "1d", "2w". */
export const timespan = () => z.string().regex(TIMESPAN, "a systemd time span such as 30min, 6h or 1d");

export function timespanSeconds(s: string): number {
  const m = TIMESPAN.exec(s);
  if (!m) throw new Error(`not a time span: ${s}`);
  return Number(m[1]) * (SPAN_SECONDS[m[2] ?? "s"] ?? 1);
}
