// Extracts the partitions an update ships from the built disk image, named the way sysupdate's
// patterns expect: <id>_<version>.<type>-<arch>.<partition uuid>.raw (sysupdate gives the new slot
// that UUID via @u; the initrd finds root and verity by the UUIDs derived from roothash=).
import { createHash } from "node:crypto";
import { closeSync, ftruncateSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { renderArtifactName } from "../contract/artifacts.js";
import type { BuildArtifact } from "../contract/build-manifest.js";
import { IMAGE_ARCHITECTURE } from "../contract/ids.js";
import { readAt, readGpt } from "../inspect/gpt.js";

const CHUNK = 1024 * 1024;
const UPDATE_PARTITIONS = ["root", "root-verity", "root-verity-sig"] as const;

/**
 * Copies a byte range into a new file, leaving all-zero chunks as holes (slot padding stays sparse),
 * and returns the SHA-256 of the bytes copied so the file need not be read again.
 */
function copySparse(src: number, offset: number, size: number, dest: string): string {
  const hash = createHash("sha256");
  const out = openSync(dest, "w", 0o644);
  try {
    for (let pos = 0; pos < size; pos += CHUNK) {
      const buf = readAt(src, offset + pos, Math.min(CHUNK, size - pos));
      hash.update(buf);
      if (buf.some((b) => b !== 0)) writeSync(out, buf, 0, buf.length, pos);
    }
    ftruncateSync(out, size);
  } finally {
    closeSync(out);
  }
  return hash.digest("hex");
}

/** Writes the update partitions found in `image` into `outDir`; partitions the image lacks are skipped. */
export function extractUpdatePartitions(image: string, outDir: string, release: { id: string; version: string }): BuildArtifact[] {
  const { partitions } = readGpt(image);
  const fd = openSync(image, "r");
  try {
    const result: BuildArtifact[] = [];
    for (const kind of UPDATE_PARTITIONS) {
      const p = partitions.find((x) => x.type === kind);
      if (!p) continue;
      const name = renderArtifactName({ ...release, kind, arch: IMAGE_ARCHITECTURE, uuid: p.uuid });
      const sha256 = copySparse(fd, p.offset, p.size, join(outDir, name));
      result.push({ name, kind, size: p.size, sha256 });
    }
    return result;
  } finally {
    closeSync(fd);
  }
}
