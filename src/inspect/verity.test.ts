// The deep verity check against cryptsetup's own tree: `veritysetup format` (Debian's cryptsetup-bin,
// installed by scripts/test.sh) writes the hash tree and prints the root hash, an implementation other
// than the one under test; verifyVerityTree must agree with it, find one flipped byte in the data or in
// the tree, and leave the event loop running while it hashes.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readVerityRootHash, type VerityProgress, verifyVerityTree } from "./verity.js";

const BLOCK = 4096;
/** Bytes before the data, so that neither partition starts at offset 0 of the file (as in a disk image). */
const LEAD = 3 * BLOCK;

interface TestImage {
  path: string;
  dataOffset: number;
  hashOffset: number;
  /** The root hash veritysetup printed. */
  rootHash: string;
}

let dir: string;

beforeAll(() => {
  try {
    execFileSync("veritysetup", ["--version"], { stdio: "pipe" });
  } catch {
    throw new Error("veritysetup is missing: install Debian's cryptsetup-bin (scripts/test.sh does)");
  }
  dir = mkdtempSync(join(tmpdir(), "basalt-verity-"));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** LEAD bytes, `blocks` random data blocks, then the hash area veritysetup wrote for them, in one file. */
function createImage(name: string, blocks: number, formatArgs: string[]): TestImage {
  const data = join(dir, `${name}.data`);
  const hash = join(dir, `${name}.hash`);
  writeFileSync(data, randomBytes(blocks * BLOCK));
  const out = execFileSync("veritysetup", ["format", ...formatArgs, data, hash], { encoding: "utf8" });
  const rootHash = /^Root hash:\s+([0-9a-f]+)$/m.exec(out)?.[1];
  if (!rootHash) throw new Error(`no root hash in veritysetup's output:\n${out}`);
  const path = join(dir, `${name}.img`);
  writeFileSync(path, Buffer.concat([Buffer.alloc(LEAD, 0xa5), readFileSync(data), readFileSync(hash)]));
  return { path, dataOffset: LEAD, hashOffset: LEAD + blocks * BLOCK, rootHash };
}

async function verify(path: string, image: TestImage, options: Parameters<typeof verifyVerityTree>[3] = {}) {
  const fd = openSync(path, "r");
  try {
    return await verifyVerityTree(fd, image.dataOffset, image.hashOffset, options);
  } finally {
    closeSync(fd);
  }
}

/** A copy of the image with the byte at `offset` inverted. */
function flipped(image: TestImage, name: string, offset: number): string {
  const bytes = readFileSync(image.path);
  bytes[offset] = (bytes[offset] ?? 0) ^ 0xff;
  const path = join(dir, `${name}.img`);
  writeFileSync(path, bytes);
  return path;
}

describe("verifyVerityTree", () => {
  // Geometries chosen by hand: levels per case follow from the block and digest sizes (comments).
  const cases: { name: string; blocks: number; args: string[] }[] = [
    // 300 blocks, 128 digests per 4 KiB hash block: levels of 3 and 1 blocks. (Data spread over
    // several worker requests and two workers: the event loop test below.)
    { name: "format 1, sha256", blocks: 300, args: [] },
    // 512-byte hash blocks hold 16 digests: three levels (19, 2, 1 blocks).
    { name: "format 1, sha256, 512-byte hash blocks", blocks: 300, args: ["--hash-block-size=512"] },
    // sha1 digests padded to 32 bytes with zeros in format 1, packed 20 bytes apart in format 0 (salt after the data).
    { name: "format 1, sha1", blocks: 300, args: ["--hash=sha1"] },
    { name: "format 0, sha1", blocks: 300, args: ["--format=0", "--hash=sha1"] },
    { name: "format 1, sha512", blocks: 300, args: ["--hash=sha512"] },
    // One data block has no tree level: the root hash is the digest of the block itself.
    { name: "one data block", blocks: 1, args: [] },
  ];

  for (const c of cases) {
    it(`computes veritysetup's root hash: ${c.name}`, async () => {
      const image = createImage(c.name.replace(/\W+/g, "-"), c.blocks, c.args);
      expect(await verify(image.path, image)).toEqual({ rootHash: image.rootHash, treeMatches: true });
    });
  }

  describe("on a tampered image (format 1, sha256, 300 blocks)", () => {
    let image: TestImage;
    // Hash area: superblock block, then the top level (1 block), then level 0 (3 blocks, the last
    // holding 300 - 2 * 128 = 44 digests and zeros after them).
    const top = () => image.hashOffset + BLOCK;
    const level0 = () => image.hashOffset + 2 * BLOCK;
    beforeAll(() => {
      image = createImage("tamper", 300, []);
    });

    it("finds one flipped data byte: another root hash, and the stored tree differs", async () => {
      const path = flipped(image, "data-flip", image.dataOffset + 200 * BLOCK + 17);
      const r = await verify(path, image);
      expect(r.treeMatches).toBe(false);
      expect(r.rootHash).not.toBe(image.rootHash);
      // Sanity check of the fixture: veritysetup itself refuses the copy.
      const hashCopy = join(dir, "data-flip.hash");
      writeFileSync(hashCopy, readFileSync(path).subarray(image.hashOffset));
      const dataCopy = join(dir, "data-flip.data");
      writeFileSync(dataCopy, readFileSync(path).subarray(image.dataOffset, image.hashOffset));
      expect(() => execFileSync("veritysetup", ["verify", dataCopy, hashCopy, image.rootHash], { stdio: "pipe" })).toThrow();
    });

    it("finds one flipped byte in a level-0 digest, with the data's root hash unchanged", async () => {
      const r = await verify(flipped(image, "leaf-flip", level0() + BLOCK + 100), image);
      expect(r).toEqual({ rootHash: image.rootHash, treeMatches: false });
    });

    it("finds one flipped byte in the zero padding after the last digest", async () => {
      const r = await verify(flipped(image, "pad-flip", level0() + 2 * BLOCK + 44 * 32 + 1000), image);
      expect(r).toEqual({ rootHash: image.rootHash, treeMatches: false });
    });

    it("finds one flipped byte in the top level (which also changes the stored root hash)", async () => {
      const path = flipped(image, "top-flip", top() + 10);
      expect(await verify(path, image)).toEqual({ rootHash: image.rootHash, treeMatches: false });
      const fd = openSync(path, "r");
      try {
        expect(readVerityRootHash(fd, image.hashOffset).rootHash).not.toBe(image.rootHash);
      } finally {
        closeSync(fd);
      }
    });
  });

  it("fails with the position when the image ends inside the data", async () => {
    const image = createImage("truncated", 300, []);
    // The hash area first, then only 100 of the 300 data blocks and a few bytes of the next: a
    // worker's read stops inside a block, fails at the end, and its error is the rejection.
    const bytes = readFileSync(image.path);
    const hashArea = bytes.subarray(image.hashOffset);
    const path = join(dir, "truncated-cut.img");
    writeFileSync(path, Buffer.concat([hashArea, bytes.subarray(image.dataOffset, image.dataOffset + 100 * BLOCK + 123)]));
    const fd = openSync(path, "r");
    try {
      await expect(verifyVerityTree(fd, hashArea.length, 0)).rejects.toThrow(`the image ends at byte ${hashArea.length + 100 * BLOCK + 123}`);
    } finally {
      closeSync(fd);
    }
  });

  it("keeps the event loop running and reports progress", async () => {
    // 8 MiB + 3 blocks: three requests to two workers (levels of 17 and 1 blocks). A synchronous
    // check would return before the timer ticks once, and keep the event loop busy all along.
    const image = createImage("event-loop", 2051, []);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const progress: VerityProgress[] = [];
    const before = performance.eventLoopUtilization();
    try {
      const r = await verify(image.path, image, { workers: 2, onProgress: (p) => progress.push(p) });
      expect(r).toEqual({ rootHash: image.rootHash, treeMatches: true });
    } finally {
      clearInterval(timer);
    }
    // The main thread mostly waits for the workers (about 0.2 on a busy 2-core machine, 1 when it hashes itself).
    expect(performance.eventLoopUtilization(before).utilization).toBeLessThan(0.6);
    expect(ticks).toBeGreaterThan(1);
    const total = 2051 * BLOCK;
    expect(progress[0]).toEqual({ bytesDone: 0, bytesTotal: total });
    expect(progress.at(-1)).toEqual({ bytesDone: total, bytesTotal: total });
    expect(progress.map((p) => p.bytesDone)).toEqual([...progress.map((p) => p.bytesDone)].sort((a, b) => a - b));
    expect(progress).toHaveLength(4);
  });
});
