// dm-verity offline: reads the hash partition's superblock, computes the root hash from the top
// tree block, and (deep mode) rebuilds the whole tree from the data partition to check it, hashing
// in worker threads (verity-worker.mjs).
import { createHash } from "node:crypto";
import { read } from "node:fs";
import { availableParallelism } from "node:os";
import { promisify } from "node:util";
import { Worker } from "node:worker_threads";
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

/** Where dm-verity puts the digests and levels of a hash tree (cryptsetup lib/verity/verity_hash.c). */
interface VerityGeometry {
  digestSize: number;
  /** Digests per hash block: the largest power of two that fits. */
  perBlock: number;
  /** Bytes from one digest to the next in a hash block: the digest rounded up to a power of two in format 1, packed in format 0. */
  stride: number;
  /** Hash blocks per level, level 0 (the digests of the data blocks) first; none when the data is a single block. */
  levelBlocks: number[];
  /** Byte offset of each level from the start of the hash area, level 0 first; the top level follows the superblock. */
  levelOffsets: number[];
}

function verityGeometry(sb: VeritySuperblock, digestSize: number): VerityGeometry {
  const perBlock = 2 ** Math.floor(Math.log2(Math.floor(sb.hashBlockSize / digestSize)));
  const stride = sb.hashType === 1 ? 2 ** Math.ceil(Math.log2(digestSize)) : digestSize;
  const levelBlocks: number[] = [];
  for (let n = sb.dataBlocks; n > 1; ) {
    n = Math.ceil(n / perBlock);
    levelBlocks.push(n);
  }
  const levelOffsets: number[] = new Array(levelBlocks.length);
  let pos = sb.hashBlockSize;
  for (let i = levelBlocks.length - 1; i >= 0; i--) {
    levelOffsets[i] = pos;
    pos += (levelBlocks[i] ?? 0) * sb.hashBlockSize;
  }
  return { digestSize, perBlock, stride, levelBlocks, levelOffsets };
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

export interface VerityTreeResult {
  /** The root hash computed from the data partition alone. */
  rootHash: string;
  /** Every stored tree block (digests and zero padding) equals the recomputed one. */
  treeMatches: boolean;
}

export interface VerityProgress {
  bytesDone: number;
  bytesTotal: number;
}

export interface VerifyVerityTreeOptions {
  /** Called with the data bytes hashed so far: once at the start, then after each chunk. */
  onProgress?: (progress: VerityProgress) => void;
  /** Worker threads to hash with; default: os.availableParallelism(). */
  workers?: number;
}

/** Data read and hashed per worker request: large sequential reads, few messages. */
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Requests queued per worker, so that it never waits for the main thread between two. */
const IN_FLIGHT = 2;

const readAsync = promisify(read);

async function readAtAsync(fd: number, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  for (let done = 0; done < length; ) {
    const { bytesRead } = await readAsync(fd, buf, done, length - done, position + done);
    if (bytesRead === 0) throw new UserError(`the image ends at byte ${position + done}, inside the verity data or hash area`);
    done += bytesRead;
  }
  return buf;
}

type WorkerRequest = { kind: "data"; offset: number; blocks: number; storedOffset: number } | { kind: "blocks"; data: Uint8Array<ArrayBuffer>; blocks: number };
interface WorkerReply {
  id: number;
  digests: Uint8Array<ArrayBuffer>;
  matches?: boolean;
  error?: string;
}

interface HashWorker {
  call(tree: Record<string, unknown>, request: WorkerRequest): Promise<WorkerReply>;
  ref(): void;
  unref(): void;
  stop(): Promise<number>;
}

/** A worker thread running verity-worker.mjs, with its requests in flight; `onExit` when it ends. */
function startHashWorker(onExit: () => void): HashWorker {
  // No execArgv: the worker is plain JavaScript and needs none of the loaders (tsx) the process may run with.
  const worker = new Worker(new URL("./verity-worker.mjs", import.meta.url), { execArgv: [] });
  const pending = new Map<number, { resolve: (r: WorkerReply) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  const failAll = (e: Error) => {
    for (const p of pending.values()) p.reject(e);
    pending.clear();
  };
  worker.on("message", (reply: WorkerReply) => {
    const p = pending.get(reply.id);
    pending.delete(reply.id);
    if (reply.error) p?.reject(new UserError(reply.error));
    else p?.resolve(reply);
  });
  worker.on("error", failAll);
  worker.on("exit", (code) => {
    onExit();
    failAll(new Error(`verity hash worker exited (code ${code})`));
  });
  return {
    call(tree, request) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.postMessage({ id, tree, ...request }, request.kind === "blocks" ? [request.data.buffer] : []);
      });
    },
    ref: () => worker.ref(),
    unref: () => worker.unref(),
    stop: () => worker.terminate(),
  };
}

/**
 * Workers are kept for a while after a check: starting one costs tens of milliseconds (hundreds on a
 * busy machine), which checks in a row (tests, a long-running process) then pay once. They hold the
 * event loop only while a check runs, and end after VERITY_WORKERS_IDLE_MS without one.
 */
export const VERITY_WORKERS_IDLE_MS = 2000;
const pool: HashWorker[] = [];
let checksRunning = 0;
let idleTimer: NodeJS.Timeout | undefined;

function acquireWorkers(count: number): HashWorker[] {
  checksRunning++;
  clearTimeout(idleTimer);
  while (pool.length < count) {
    const w = startHashWorker(() => {
      const i = pool.indexOf(w);
      if (i >= 0) pool.splice(i, 1);
    });
    pool.push(w);
  }
  for (const w of pool) w.ref();
  return pool.slice(0, count);
}

function releaseWorkers(): void {
  if (--checksRunning > 0) return;
  for (const w of pool) w.unref();
  idleTimer = setTimeout(() => {
    for (const w of pool.splice(0)) void w.stop();
  }, VERITY_WORKERS_IDLE_MS).unref();
}

/** Lays digests out as dm-verity stores a level: perBlock per hash block, stride apart, zero-padded. */
function packLevel(digests: Uint8Array, g: VerityGeometry, hashBlockSize: number): Uint8Array<ArrayBuffer> {
  const count = digests.length / g.digestSize;
  const out = new Uint8Array(Math.ceil(count / g.perBlock) * hashBlockSize);
  for (let i = 0; i < count; i++) {
    out.set(digests.subarray(i * g.digestSize, (i + 1) * g.digestSize), Math.floor(i / g.perBlock) * hashBlockSize + (i % g.perBlock) * g.stride);
  }
  return out;
}

/**
 * Recomputes the hash tree from the data partition and returns the root hash it yields; any
 * changed data block changes it. Also compares every stored tree block with the recomputed one.
 * The data is read in large sequential chunks and hashed in worker threads: the event loop stays free.
 */
export async function verifyVerityTree(fd: number, dataOffset: number, hashOffset: number, options: VerifyVerityTreeOptions = {}): Promise<VerityTreeResult> {
  const sb = parseVeritySuperblock(await readAtAsync(fd, hashOffset, 512));
  if (sb.hashType !== 1 && sb.hashType !== 0) throw new UserError(`unsupported verity hash type ${sb.hashType}`);
  if (sb.dataBlocks < 1) throw new UserError("the verity superblock counts no data blocks");
  let digestSize: number;
  try {
    digestSize = createHash(sb.algorithm).digest().length;
  } catch {
    throw new UserError(`unsupported verity hash algorithm ${JSON.stringify(sb.algorithm)}`);
  }
  const g = verityGeometry(sb, digestSize);
  const bytesTotal = sb.dataBlocks * sb.dataBlockSize;
  options.onProgress?.({ bytesDone: 0, bytesTotal });
  if (g.levelBlocks.length === 0) {
    // A single data block is its own tree: the root hash is its digest, no level is stored.
    const rootHash = hashBlock(sb, await readAtAsync(fd, dataOffset, sb.dataBlockSize)).toString("hex");
    options.onProgress?.({ bytesDone: bytesTotal, bytesTotal });
    return { rootHash, treeMatches: true };
  }
  // Chunks end on a hash block boundary of level 0, so each request fills whole stored blocks.
  const chunkBlocks = g.perBlock * Math.max(1, Math.floor(CHUNK_BYTES / (g.perBlock * sb.dataBlockSize)));
  const chunks = Math.ceil(sb.dataBlocks / chunkBlocks);
  const count = Math.max(1, Math.min(options.workers ?? availableParallelism(), chunks));
  const tree = {
    fd,
    algorithm: sb.algorithm,
    salt: new Uint8Array(sb.salt),
    hashType: sb.hashType,
    dataBlockSize: sb.dataBlockSize,
    hashBlockSize: sb.hashBlockSize,
    digestSize,
    stride: g.stride,
    perBlock: g.perBlock,
  };
  const workers = acquireWorkers(count);
  try {
    // Level 0 in the workers: each request reads a chunk, hashes its blocks, packs and compares
    // its level-0 hash blocks and returns their digests, the input of level 1.
    let digests = new Uint8Array((g.levelBlocks[0] ?? 0) * digestSize);
    let treeMatches = true;
    let next = 0;
    let bytesDone = 0;
    let failed = false;
    const lane = async (worker: (typeof workers)[number]) => {
      while (next < chunks && !failed) {
        const c = next++;
        const blocks = Math.min(chunkBlocks, sb.dataBlocks - c * chunkBlocks);
        const firstHashBlock = (c * chunkBlocks) / g.perBlock;
        try {
          const reply = await worker.call(tree, {
            kind: "data",
            offset: dataOffset + c * chunkBlocks * sb.dataBlockSize,
            blocks,
            storedOffset: hashOffset + (g.levelOffsets[0] ?? 0) + firstHashBlock * sb.hashBlockSize,
          });
          if (!reply.matches) treeMatches = false;
          digests.set(reply.digests, firstHashBlock * digestSize);
        } catch (e) {
          failed = true;
          throw e;
        }
        bytesDone += blocks * sb.dataBlockSize;
        options.onProgress?.({ bytesDone, bytesTotal });
      }
    };
    const lanes = await Promise.allSettled(workers.flatMap((w) => Array.from({ length: IN_FLIGHT }, () => lane(w))));
    const failure = lanes.find((l): l is PromiseRejectedResult => l.status === "rejected");
    if (failure) throw failure.reason;
    // Upper levels are 1/perBlock of the one below: one request each.
    for (let level = 1; level < g.levelBlocks.length; level++) {
      const packed = packLevel(digests, g, sb.hashBlockSize);
      const stored = await readAtAsync(fd, hashOffset + (g.levelOffsets[level] ?? 0), packed.length);
      if (!stored.equals(packed)) treeMatches = false;
      const worker = workers[level % workers.length] ?? workers[0];
      if (!worker) throw new Error("no verity hash worker");
      digests = (await worker.call(tree, { kind: "blocks", data: packed, blocks: g.levelBlocks[level] ?? 0 })).digests;
    }
    return { rootHash: Buffer.from(digests).toString("hex"), treeMatches };
  } finally {
    // Every request has been answered by now: no worker reads from fd once this returns.
    releaseWorkers();
  }
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
