// The identifiers the image, the server, the CLI and the tests must agree on, each with one rule.
// Depends on nothing but zod: a device, a route and a test fake parse them with the same schema.
import { z } from "zod";

/** os-release IMAGE_ID: file names, partition labels and the hostname prefix derive from it. */
export const imageId = z.string().regex(/^[a-z][a-z0-9-]{0,23}$/, "expected lowercase letters, digits and '-', starting with a letter, at most 24");

/**
 * os-release IMAGE_VERSION. sysupdate's `@v` accepts [A-Za-z0-9.,_+-]; '_' and '+' would collide
 * with Basalt's file name patterns (`<id>_<version>` and the boot counter `+N-M`).
 */
export const version = z
  .string()
  .regex(/^[0-9][A-Za-z0-9.]{0,31}$/, "expected a version such as 1.0 or 2025.11.3 (digits, letters and dots, starting with a digit, at most 32)");

const hex32 = (what: string) => z.string().regex(/^[0-9a-f]{32}$/, `expected a ${what}: 32 lowercase hexadecimal digits`);
/** /etc/machine-id (`%m`): from the firmware's UUID on a Basalt device. */
export const machineId = hex32("machine-id");
/** The kernel's boot id (`%b`), without dashes. */
export const bootId = hex32("boot id");

const name = (what: string) =>
  z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, `expected a ${what} name: letters, digits and . _ -, starting with a letter or digit, at most 64`);
/** An update channel (`stable`, `beta`): the first segment of a device's update URL. */
export const channel = name("channel");
/** A group of devices an operator pins together. */
export const group = name("group");

/** The one architecture Basalt builds for, as systemd names it (`%a`); mkosi's Architecture= uses the same name. */
export const IMAGE_ARCHITECTURE = "x86-64";

/** systemd's architecture names (`%a`, src/basic/architecture.c). */
export const architecture = z.enum([
  "alpha",
  "arc",
  "arc-be",
  "arm",
  "arm-be",
  "arm64",
  "arm64-be",
  "cris",
  "ia64",
  "loongarch64",
  "m68k",
  "mips",
  "mips-le",
  "mips64",
  "mips64-le",
  "nios2",
  "parisc",
  "parisc64",
  "ppc",
  "ppc-le",
  "ppc64",
  "ppc64-le",
  "riscv32",
  "riscv64",
  "s390",
  "s390x",
  "sh",
  "sh64",
  "sparc",
  "sparc64",
  "tilegx",
  "x86",
  "x86-64",
]);

/** A file of a release as SHA256SUMS names it: no '/', no control characters, at most 255 bytes. */
export const releaseFileName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/, "expected a release file name: letters, digits and . _ + -, at most 255");

export const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "expected a SHA-256: 64 lowercase hexadecimal digits");

/** The first problem zod found, as one line: `path: message`. */
export function firstIssue(error: z.ZodError, prefix?: string): string {
  const issue = error.issues[0];
  if (!issue) return prefix ?? "invalid";
  const path = [prefix, ...issue.path.map(String)].filter(Boolean).join(".");
  return path ? `${path}: ${issue.message}` : issue.message;
}
