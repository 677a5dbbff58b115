// Extracts the partitions an update ships from the built disk image, named the way sysupdate's
// patterns expect: <id>_<version>.<type>-<arch>.<partition uuid>.raw (sysupdate gives the new slot
// that UUID via @u; the initrd finds root and verity by the UUIDs derived from roothash=).
import { closeSync, ftruncateSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { readAt, readGpt } from "../inspect/gpt.js";

const CHUNK = 1024 * 1024;
const ARCH = "x86-64";

export interface ExtractedPartition {
  kind: "root" | "root-verity" | "root-verity-sig";
  file: string;
}

/** Copies a byte range into a new file, leaving all-zero chunks as holes (slot padding stays sparse). */
function copySparse(src: number, offset: number, size: number, dest: string): void {
  const out = openSync(dest, "w", 0o644);
  try {
    for (let pos = 0; pos < size; pos += CHUNK) {
      const buf = readAt(src, offset + pos, Math.min(CHUNK, size - pos));
      if (buf.some((b) => b !== 0)) writeSync(out, buf, 0, buf.length, pos);
    }
    ftruncateSync(out, size);
  } finally {
    closeSync(out);
  }
}

export function extractUpdatePartitions(image: string, outDir: string, output: string): ExtractedPartition[] {
  const { partitions } = readGpt(image);
  const fd = openSync(image, "r");
  try {
    const result: ExtractedPartition[] = [];
    for (const kind of ["root", "root-verity", "root-verity-sig"] as const) {
      const p = partitions.find((x) => x.type === kind);
      if (!p) continue;
      const typeId = kind === "root" ? `root-${ARCH}` : `root-${ARCH}${kind.slice(4)}`;
      const file = `${output}.${typeId}.${p.uuid}.raw`;
      copySparse(fd, p.offset, p.size, join(outDir, file));
      result.push({ kind, file });
    }
    return result;
  } finally {
    closeSync(fd);
  }
}
