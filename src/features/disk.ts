// The disk layout: ESP, root A slot (EROFS on dm-verity with a signature) built by mkosi's
// systemd-repart, and the on-device repart.d that keeps slot A and adds an empty slot B.
import { z } from "zod";
import { size, sizeBytes } from "../definition/types.js";
import type { Problem } from "../errors.js";
import type { IniSection } from "../generator/tree.js";
import type { Feature } from "./feature.js";

const BLOCK = 4096;
const HASH_BYTES = 32;
const MiB = 1024 * 1024;
// systemd-repart writes a root-verity-sig partition of this fixed size.
export const VERITY_SIG_SIZE = "16K";

/** Size of a dm-verity hash partition (superblock + every tree level) for a data partition, rounded up to MiB. */
export function verityHashSize(dataBytes: number): number {
  let blocks = Math.ceil(dataBytes / BLOCK);
  let total = 1; // the superblock occupies the first block
  const perBlock = BLOCK / HASH_BYTES;
  do {
    blocks = Math.ceil(blocks / perBlock);
    total += blocks;
  } while (blocks > 1);
  return Math.ceil((total * BLOCK) / MiB) * MiB;
}

/** Partition labels; sysupdate's target patterns must produce the same names. */
export function slotLabels(id: string, version: string) {
  const base = `${id}_${version}`;
  return { root: base, verity: `${base}_v`, signature: `${base}_s` };
}

export const keys = {
  disk: z
    .strictObject({
      esp_size: size().default("512M").describe("Size of the EFI system partition; holds systemd-boot and at least three UKIs."),
      slot_size: size()
        .default("1G")
        .describe("Fixed size of each root slot. Later versions must fit in it, so leave headroom; padding costs nothing in xz-compressed updates."),
      compression: z.enum(["zstd", "lzma", "lz4hc", "none"]).default("zstd").describe("EROFS compression of the root file system."),
    })
    .prefault({})
    .describe("Disk layout."),
} satisfies z.ZodRawShape;

export const toggles = {
  ab_updates: z.boolean().default(true).describe("Create an empty second root slot (B) on first boot for A/B updates."),
} satisfies z.ZodRawShape;

export const feature: Feature = {
  name: "disk",
  summary: "GPT layout: ESP with systemd-boot, root on EROFS + dm-verity + signature, fixed-size A/B slots.",
  keys,
  toggles,
  check(a, ctx) {
    const problems: Problem[] = [];
    if (sizeBytes(a.disk.slot_size) < 256 * MiB) {
      problems.push({ file: ctx.file, line: ctx.lineOf(["disk", "slot_size"]), key: "disk.slot_size", message: "must be at least 256M" });
    }
    if (sizeBytes(a.disk.esp_size) < 128 * MiB) {
      problems.push({
        file: ctx.file,
        line: ctx.lineOf(["disk", "esp_size"]),
        key: "disk.esp_size",
        message: "must be at least 128M (three UKIs and systemd-boot)",
      });
    }
    return problems;
  },
  render(a, tree) {
    const labels = slotLabels(a.id, a.version);
    const slot = a.disk.slot_size;
    const verity = String(verityHashSize(sizeBytes(slot)));
    const fixed = (s: string): [string, string][] => [
      ["SizeMinBytes", s],
      ["SizeMaxBytes", s],
    ];
    const rootEntries: [string, string][] = [
      ["Type", "root"],
      ["Label", labels.root],
      ["Format", "erofs"],
      ["CopyFiles", "/"],
      // The ESP's content comes from /boot and /efi; the root keeps only the empty mount points.
      ["ExcludeFiles", "/boot/"],
      ["ExcludeFiles", "/efi/"],
      ["Verity", "data"],
      ["VerityMatchKey", "root"],
      ["Minimize", "best"],
      ...fixed(slot),
    ];
    if (a.disk.compression !== "none") rootEntries.push(["Compression", a.disk.compression]);
    const ini = (entries: [string, string][]): IniSection[] => [["Partition", entries]];

    tree
      // Basalt extracts the update partitions from the disk itself (src/build/extract.ts).
      .set("Output", "SplitArtifacts", ["uki"])
      .ini("mkosi.repart/00-esp.conf", ini([["Type", "esp"], ["Format", "vfat"], ["CopyFiles", "/boot:/"], ["CopyFiles", "/efi:/"], ...fixed(a.disk.esp_size)]))
      .ini("mkosi.repart/10-root.conf", ini(rootEntries))
      .ini(
        "mkosi.repart/11-root-verity.conf",
        ini([["Type", "root-verity"], ["Label", labels.verity], ["Verity", "hash"], ["VerityMatchKey", "root"], ...fixed(verity)]),
      )
      .ini(
        "mkosi.repart/12-root-verity-sig.conf",
        // repart sizes signature partitions itself (and refuses explicit sizes for them).
        ini([
          ["Type", "root-verity-sig"],
          ["Label", labels.signature],
          ["Verity", "signature"],
          ["VerityMatchKey", "root"],
        ]),
      );

    // On the device, definitions match existing partitions by type in file order: slot A first,
    // then slot B, which repart creates empty (sysupdate's free-slot label is "_empty").
    tree
      .imageIni("usr/lib/repart.d/10-root-a.conf", ini([["Type", "root"], ...fixed(slot)]))
      .imageIni("usr/lib/repart.d/11-root-verity-a.conf", ini([["Type", "root-verity"], ...fixed(verity)]))
      .imageIni("usr/lib/repart.d/12-root-verity-sig-a.conf", ini([["Type", "root-verity-sig"], ...fixed(VERITY_SIG_SIZE)]));
    if (a.features.ab_updates) {
      const b: [string, string][] = [
        ["Label", "_empty"],
        ["NoAuto", "yes"],
      ];
      tree
        .imageIni("usr/lib/repart.d/20-root-b.conf", ini([["Type", "root"], ...b, ...fixed(slot)]))
        .imageIni("usr/lib/repart.d/21-root-verity-b.conf", ini([["Type", "root-verity"], ...b, ...fixed(verity)]))
        .imageIni("usr/lib/repart.d/22-root-verity-sig-b.conf", ini([["Type", "root-verity-sig"], ...b, ...fixed(VERITY_SIG_SIZE)]));
    }
  },
};
