// dm-verity offline: reads the hash partition's superblock, computes the root hash from the top
// tree block, and (deep mode) rebuilds the whole tree from the data partition to check it.
import { createHash } from "node:crypto";
import { UserError } from "../errors.js";
import { readAt } from "./gpt.js";

export interface VeritySuperblock {
  version: number;
  hashType: number;
  algorithm: string;
  dataBlockSize: number;
  hashBlockSize: number;
  dataBlocks: number;
  salt: Buffer;
}

/** cryptsetup's on-disk superblock (struct verity_sb), at the start of the hash partition. */
export function parseVeritySuperblock(b: Buffer): VeritySuperblock {
  if (b.subarray(0, 8).toString("latin1") !== "verity\0\0") throw new UserError("verity partition has no verity superblock");
  const saltSize = b.readUInt16LE(80);
  return {
    version: b.readUInt32LE(8),
    hashType: b.readUInt32LE(12),
    algorithm: b.subarray(32, 64).toString("latin1").replace(/\0.*$/s, ""),
    dataBlockSize: b.readUInt32LE(64),
    hashBlockSize: b.readUInt32LE(68),
    dataBlocks: Number(b.readBigUInt64LE(72)),
    salt: Buffer.from(b.subarray(88, 88 + saltSize)),
  };
}

function hashBlock(sb: VeritySuperblock, block: Buffer): Buffer {
  const h = createHash(sb.algorithm);
  // Format 1 hashes salt then data; format 0 (Chrome OS) data then salt.
  if (sb.hashType === 1) h.update(sb.salt).update(block);
  else h.update(block).update(sb.salt);
  return h.digest();
}

/** Number of hash blocks on each level, leaves first. */
function levelSizes(sb: VeritySuperblock, digestSize: number): number[] {
  const perBlock = Math.floor(sb.hashBlockSize / 2 ** Math.ceil(Math.log2(digestSize)));
  const sizes: number[] = [];
  let n = sb.dataBlocks;
  do {
    n = Math.ceil(n / perBlock);
    sizes.push(n);
  } while (n > 1);
  return sizes;
}

export interface VerityInfo {
  superblock: VeritySuperblock;
  rootHash: string;
}

/** The root hash as dm-verity computes it: the hash of the single top-level block. */
export function readVerityRootHash(fd: number, hashOffset: number): VerityInfo {
  const sb = parseVeritySuperblock(readAt(fd, hashOffset, 512));
  if (sb.hashType !== 1 && sb.hashType !== 0) throw new UserError(`unsupported verity hash type ${sb.hashType}`);
  // The tree follows the superblock, top level first (cryptsetup lib/verity/verity_hash.c).
  const treeStart = hashOffset + sb.hashBlockSize;
  const top = readAt(fd, treeStart, sb.hashBlockSize);
  return { superblock: sb, rootHash: hashBlock(sb, top).toString("hex") };
}

/**
 * Recomputes the hash tree from the data partition and returns the root hash it yields; any
 * changed data block changes it. Also compares every stored tree block with the recomputed one.
 */
export function computeVerityTree(fd: number, dataOffset: number, hashOffset: number): { rootHash: string; treeMatches: boolean } {
  const sb = parseVeritySuperblock(readAt(fd, hashOffset, 512));
  const digest = createHash(sb.algorithm).digest().length;
  const slot = 2 ** Math.ceil(Math.log2(digest));
  const sizes = levelSizes(sb, digest);
  // Stored positions: top level first, right after the superblock block.
  const positions: number[] = new Array(sizes.length);
  let pos = hashOffset + sb.hashBlockSize;
  for (let i = sizes.length - 1; i >= 0; i--) {
    positions[i] = pos;
    pos += (sizes[i] ?? 0) * sb.hashBlockSize;
  }
  const perBlock = sb.hashBlockSize / slot;
  let treeMatches = true;
  // Level 0: hashes of data blocks, read in chunks.
  let hashes: Buffer[] = [];
  const CHUNK = 1024;
  for (let i = 0; i < sb.dataBlocks; i += CHUNK) {
    const n = Math.min(CHUNK, sb.dataBlocks - i);
    const buf = readAt(fd, dataOffset + i * sb.dataBlockSize, n * sb.dataBlockSize);
    for (let j = 0; j < n; j++) hashes.push(hashBlock(sb, buf.subarray(j * sb.dataBlockSize, (j + 1) * sb.dataBlockSize)));
  }
  for (let level = 0; level < sizes.length; level++) {
    const blocks: Buffer[] = [];
    for (let b = 0; b * perBlock < hashes.length; b++) {
      const block = Buffer.alloc(sb.hashBlockSize);
      hashes.slice(b * perBlock, (b + 1) * perBlock).forEach((h, k) => {
        h.copy(block, k * slot);
      });
      blocks.push(block);
    }
    const stored = readAt(fd, positions[level] ?? 0, blocks.length * sb.hashBlockSize);
    if (!stored.equals(Buffer.concat(blocks))) treeMatches = false;
    hashes = blocks.map((b) => hashBlock(sb, b));
  }
  return { rootHash: hashes[0]?.toString("hex") ?? "", treeMatches };
}

/** The root-verity-sig partition: JSON with the root hash, the signer's fingerprint and a PKCS#7 signature. */
export function readVeritySignature(fd: number, offset: number, size: number): { rootHash: string; certificateFingerprint?: string; signature: string } {
  const raw = readAt(fd, offset, size).toString("utf8").replace(/\0+$/s, "");
  try {
    const j = JSON.parse(raw) as { rootHash?: string; certificateFingerprint?: string; signature?: string };
    if (!j.rootHash || !j.signature) throw new Error("incomplete");
    return { rootHash: j.rootHash, signature: j.signature, ...(j.certificateFingerprint ? { certificateFingerprint: j.certificateFingerprint } : {}) };
  } catch {
    throw new UserError("root-verity-sig partition does not hold a verity signature (JSON with rootHash and signature)");
  }
}
