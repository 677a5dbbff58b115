// Reads a GPT partition table from a disk image and names partitions by their Discoverable
// Partitions Specification type (x86-64).
import { closeSync, openSync, readSync } from "node:fs";
import { UserError } from "../errors.js";

// UAPI Discoverable Partitions Specification, x86-64 entries and the generic ones.
export const PARTITION_TYPES: Record<string, string> = {
  "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "esp",
  "bc13c2ff-59e6-4262-a352-b275fd6f7172": "xbootldr",
  "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "root",
  "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5": "root-verity",
  "41092b05-9fc8-4523-994f-2def0408b176": "root-verity-sig",
  "8484680c-9521-48c6-9c11-b0720656f69e": "usr",
  "77ff5f63-e7b6-4633-acf4-1565b864c0e6": "usr-verity",
  "e7bb33fb-06cf-4e81-8273-e543b413e2e2": "usr-verity-sig",
  "4d21b016-b534-45c2-a9fb-5c16e091fd2d": "var",
  "7ec6f557-3bc5-4aca-b293-16ef5df639d1": "tmp",
  "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "home",
  "3b8f8425-20e0-4f3b-907f-1a25a76f98e8": "srv",
  "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "swap",
  "0fc63daf-8483-4772-8e79-3d69d8477de4": "linux-generic",
};

export interface GptPartition {
  index: number;
  typeUuid: string;
  /** Discoverable partition name, or "unknown". */
  type: string;
  uuid: string;
  label: string;
  offset: number;
  size: number;
  attributes: bigint;
}

export function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, offset + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

/** GUIDs are stored mixed-endian: the first three fields little-endian. */
export function guidToString(b: Buffer): string {
  const hex = (x: Buffer) => x.toString("hex");
  const le = (x: Buffer) => hex(Buffer.from(x).reverse());
  return `${le(b.subarray(0, 4))}-${le(b.subarray(4, 6))}-${le(b.subarray(6, 8))}-${hex(b.subarray(8, 10))}-${hex(b.subarray(10, 16))}`;
}

export interface Gpt {
  sectorSize: number;
  diskUuid: string;
  partitions: GptPartition[];
}

/** The GPT of a disk that `read` reads (offset and length in bytes), or undefined when it has none. */
export function parseGpt(read: (offset: number, length: number) => Buffer): Gpt | undefined {
  for (const sectorSize of [512, 4096]) {
    const header = read(sectorSize, 92);
    if (header.subarray(0, 8).toString("latin1") !== "EFI PART") continue;
    const entriesLba = Number(header.readBigUInt64LE(72));
    const count = header.readUInt32LE(80);
    const entrySize = header.readUInt32LE(84);
    const table = read(entriesLba * sectorSize, count * entrySize);
    const partitions: GptPartition[] = [];
    for (let i = 0; i < count; i++) {
      const e = table.subarray(i * entrySize, (i + 1) * entrySize);
      const typeUuid = guidToString(e.subarray(0, 16));
      if (typeUuid === "00000000-0000-0000-0000-000000000000") continue;
      const first = Number(e.readBigUInt64LE(32));
      const last = Number(e.readBigUInt64LE(40));
      partitions.push({
        index: i + 1,
        typeUuid,
        type: PARTITION_TYPES[typeUuid] ?? "unknown",
        uuid: guidToString(e.subarray(16, 32)),
        label: e.subarray(56, 128).toString("utf16le").replace(/\0.*$/s, ""),
        offset: first * sectorSize,
        size: (last - first + 1) * sectorSize,
        attributes: e.readBigUInt64LE(48),
      });
    }
    return { sectorSize, diskUuid: guidToString(header.subarray(56, 72)), partitions };
  }
  return undefined;
}

export function readGpt(image: string): Gpt {
  let fd: number;
  try {
    fd = openSync(image, "r");
  } catch {
    throw new UserError(`cannot open image ${image}`);
  }
  try {
    const gpt = parseGpt((offset, length) => readAt(fd, offset, length));
    if (!gpt) throw new UserError(`${image} has no GPT partition table`);
    return gpt;
  } finally {
    closeSync(fd);
  }
}

/** Names the file system at the start of a partition by its magic, or undefined. */
export function detectFilesystem(fd: number, offset: number): string | undefined {
  const head = readAt(fd, offset, 4096);
  if (head.length >= 1028 && head.readUInt32LE(1024) === 0xe0f5e1e2) return "erofs";
  if (head.subarray(0x52, 0x5a).toString("latin1").startsWith("FAT32") || head.subarray(0x36, 0x3e).toString("latin1").startsWith("FAT")) return "vfat";
  if (head.subarray(0, 8).toString("latin1") === "verity\0\0") return "verity";
  if (head.subarray(0, 6).toString("latin1") === "LUKS\xba\xbe") return "luks";
  const btrfs = readAt(fd, offset + 0x10040, 8).toString("latin1");
  if (btrfs === "_BHRfS_M") return "btrfs";
  if (head.subarray(0, 1).toString() === "{") return "json";
  return undefined;
}
