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
