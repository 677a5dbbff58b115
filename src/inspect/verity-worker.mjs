// Worker thread of the deep verity check (verity.ts, verifyVerityTree): hashes runs of blocks off the
// main thread. Plain JavaScript so that it loads as is, with or without tsx: it needs only node:crypto,
// node:fs and node:worker_threads.
//
// Every request carries the check it belongs to, `tree`: { fd, algorithm, salt, hashType, dataBlockSize,
// hashBlockSize, digestSize, stride, perBlock } (the image's file descriptor is shared with the main
// thread; reads are positional). A worker serves one check after another (verity.ts keeps it a while).
// Requests and replies:
//   { id, tree, kind: "data", offset, blocks, storedOffset }
//     reads `blocks` data blocks at `offset`, packs their digests into hash blocks exactly as dm-verity
//     stores level 0, compares those with the stored bytes at `storedOffset`, and replies
//     { id, matches, digests } with the digests of the packed hash blocks (the input of level 1);
//   { id, tree, kind: "blocks", data, blocks }
//     replies { id, digests } with the digests of `blocks` hash blocks in `data` (an upper tree level);
//   on failure { id, error }.
import { hash } from "node:crypto";
import { readSync, readvSync } from "node:fs";
import { parentPort } from "node:worker_threads";

// Format 1 hashes salt then block; format 0 (Chrome OS) block then salt (cryptsetup verify_hash_block()).
// One crypto.hash() call per block over one contiguous salted input is the fastest way measured here
// (fewer calls into C++ than createHash().update().update().digest()).
// Data blocks are read with readv straight into slots that already hold the salt, [salt|block] or
// [block|salt], so that each hash input is a view: no copy per block (about 10 % less CPU than copying).

/** The current check's parameters and the buffers laid out for it; rebuilt when a request of another check comes. */
let t;
let key = "";
function use(tree) {
  const k = `${tree.algorithm}/${Buffer.from(tree.salt).toString("hex")}/${tree.hashType}/${tree.dataBlockSize}/${tree.hashBlockSize}`;
  if (k === key) {
    t.fd = tree.fd;
    return;
  }
  key = k;
  const salt = Buffer.from(tree.salt);
  const saltFirst = tree.hashType === 1;
  const scratch = Buffer.alloc(tree.hashBlockSize + salt.length);
  if (saltFirst) salt.copy(scratch, 0);
  t = {
    ...tree,
    salt,
    saltFirst,
    scratch,
    slot: tree.dataBlockSize + salt.length,
    blockViews: [],
    inputViews: [],
    packed: Buffer.alloc(0),
    stored: Buffer.alloc(0),
  };
}

/** The digest of an upper-level block, copied next to the salt first. */
function digestInto(block, out, at) {
  block.copy(t.scratch, t.saltFirst ? t.salt.length : 0);
  if (!t.saltFirst) t.salt.copy(t.scratch, block.length);
  hash(t.algorithm, t.scratch.subarray(0, block.length + t.salt.length), "buffer").copy(out, at, 0, t.digestSize);
}

/** Where readv puts each data block, and the salted hash input around it. */
function reserveStaging(blocks) {
  if (t.blockViews.length >= blocks) return;
  const staging = Buffer.alloc(blocks * t.slot);
  t.blockViews = [];
  t.inputViews = [];
  for (let i = 0; i < blocks; i++) {
    const start = i * t.slot;
    const blockStart = t.saltFirst ? start + t.salt.length : start;
    t.salt.copy(staging, t.saltFirst ? start : start + t.dataBlockSize);
    t.blockViews.push(staging.subarray(blockStart, blockStart + t.dataBlockSize));
    t.inputViews.push(staging.subarray(start, start + t.slot));
  }
}
/** Linux's IOV_MAX: libuv passes at most this many buffers to one readv and returns a short count. */
const IOV_MAX = 1024;
function readBlocks(blocks, position) {
  reserveStaging(blocks);
  const size = t.dataBlockSize;
  // `within`: bytes of block i already read when a readv returned in the middle of it.
  for (let i = 0, within = 0; i < blocks; ) {
    const batch = t.blockViews.slice(i, Math.min(blocks, i + IOV_MAX));
    if (within) batch[0] = batch[0].subarray(within);
    const n = readvSync(t.fd, batch, position + i * size + within);
    if (n === 0) throw new Error(`the image ends at byte ${position + i * size + within}, inside the verity data or hash area`);
    i += Math.floor((within + n) / size);
    within = (within + n) % size;
  }
}

const reserve = (buf, size) => (buf.length >= size ? buf : Buffer.alloc(size));

function readFully(buf, length, position) {
  let done = 0;
  while (done < length) {
    const n = readSync(t.fd, buf, done, length - done, position + done);
    if (n === 0) throw new Error(`the image ends at byte ${position + done}, inside the verity data or hash area`);
    done += n;
  }
}

function hashBlocks(source, blocks) {
  const digests = new Uint8Array(blocks * t.digestSize);
  const out = Buffer.from(digests.buffer);
  for (let i = 0; i < blocks; i++) digestInto(source.subarray(i * t.hashBlockSize, (i + 1) * t.hashBlockSize), out, i * t.digestSize);
  return digests;
}

function verifyData({ offset, blocks, storedOffset }) {
  readBlocks(blocks, offset);
  const hashBlockCount = Math.ceil(blocks / t.perBlock);
  const packedSize = hashBlockCount * t.hashBlockSize;
  t.packed = reserve(t.packed, packedSize);
  const packed = t.packed;
  // Spare bytes (after each digest in format 1 when the digest is not a power of two, and after the
  // last digest of a block) are zero on disk; cryptsetup checks them too.
  packed.fill(0, 0, packedSize);
  for (let i = 0; i < blocks; i++) {
    const at = Math.floor(i / t.perBlock) * t.hashBlockSize + (i % t.perBlock) * t.stride;
    hash(t.algorithm, t.inputViews[i], "buffer").copy(packed, at, 0, t.digestSize);
  }
  t.stored = reserve(t.stored, packedSize);
  const stored = t.stored;
  readFully(stored, packedSize, storedOffset);
  const matches = stored.subarray(0, packedSize).equals(packed.subarray(0, packedSize));
  return { matches, digests: hashBlocks(packed, hashBlockCount) };
}

parentPort.on("message", (request) => {
  try {
    use(request.tree);
    const result =
      request.kind === "data"
        ? verifyData(request)
        : { digests: hashBlocks(Buffer.from(request.data.buffer, request.data.byteOffset, request.data.byteLength), request.blocks) };
    parentPort.postMessage({ id: request.id, ...result }, [result.digests.buffer]);
  } catch (e) {
    parentPort.postMessage({ id: request.id, error: e instanceof Error ? e.message : String(e) });
  }
});
