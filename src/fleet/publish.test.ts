// Publishing is atomic: the database and the artifact store change together or not at all. A
// failure is injected at each step of a publish (begin, each file's upload, the store's commit, the
// database's record of it, the promote after it): a full disk, a database error, a killed process
// (a child server, tests/support/publish-child.ts). Afterwards no temporary file is left, the
// release is published whole or not at all, and the same publish, retried, succeeds and serves the
// bytes. On SQLite and on a throwaway PostgreSQL, with the release files in a directory.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { Transaction } from "kysely";
import { afterEach, describe, expect, it, vi } from "vitest";
import { databaseEngines } from "../../tests/support/database-engines.js";
import { signedManifest, standInRelease } from "../../tests/support/fleet-server.js";
import { filesBelow, KILL_POINTS, type KillPoint, publishedState, publishInProcess, type StandIn, temporaryEntries } from "../../tests/support/publishing.js";
import { hookStatements } from "../../tests/support/sql-faults.js";
import { ConflictError, NotFoundError, UserError } from "../errors.js";
import { openFleet } from "../server/server.js";
import type { Database } from "./db/tables.js";
import type { Fleet } from "./fleet.js";

// A disk with `bytesLeft` bytes free, for every file stream the store opens: writes beyond fail as
// on a full file system (the bytes that fit are written, then ENOSPC).
const disk = vi.hoisted(() => ({ bytesLeft: undefined as number | undefined }));
vi.mock("node:fs", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs")>();
  type WriteCallback = (err: NodeJS.ErrnoException | null, written?: number) => void;
  const full = () => Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC", errno: -28, syscall: "write" });
  const write = (fd: number, buffer: Buffer, offset: number, length: number, position: number | null, done: WriteCallback) => {
    const left = disk.bytesLeft ?? Number.POSITIVE_INFINITY;
    if (length <= left) {
      if (disk.bytesLeft !== undefined) disk.bytesLeft -= length;
      return fs.write(fd, buffer, offset, length, position, done);
    }
    disk.bytesLeft = 0;
    if (left === 0) return done(full());
    fs.write(fd, buffer, offset, left, position, (e) => done(e ?? full()));
  };
  const createWriteStream: typeof fs.createWriteStream = (path, options) =>
    disk.bytesLeft === undefined
      ? fs.createWriteStream(path, options)
      : fs.createWriteStream(path, {
          ...(typeof options === "object" ? options : {}),
          fs: { open: fs.open, close: fs.close, fsync: fs.fsync, write },
        } as never);
  return { ...fs, default: { ...fs, createWriteStream }, createWriteStream };
});

const sha256 = (b: Buffer | undefined) =>
  createHash("sha256")
    .update(b ?? Buffer.alloc(0))
    .digest("hex");
const full = () => Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
const dbDown = () => new Error("Connection terminated unexpectedly");

const { engines, fresh } = databaseEngines("publish");
const open: Fleet[] = [];
const dirs: string[] = [];
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
};

afterEach(async () => {
  disk.bytesLeft = undefined;
  vi.restoreAllMocks();
  for (const f of open.splice(0)) await f.db.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe.each(engines)("publishing on %s", (backend) => {
  /** A data directory and a database for one test (both empty). */
  async function place(): Promise<{ data: string; database?: string }> {
    const data = tempDir("basalt-publish-");
    const database = await fresh(backend);
    return database ? { data, database } : { data };
  }

  /** The server starting on `where`: the store's recovery runs as it opens, then the interrupted commits are finished. */
  async function start(where: { data: string; database?: string }): Promise<Fleet> {
    const fleet = await openFleet(where);
    open.push(fleet);
    return fleet;
  }

  /** The files a device on the channel is served, byte for byte. */
  async function expectServed(fleet: Fleet, r: StandIn): Promise<void> {
    for (const f of r.manifest.files) {
      const offered = await fleet.offeredFile({ channel: "stable", image: "demo", arch: "x86-64", machine: "ab".repeat(16), booted: "0.9", file: f.name });
      if (offered?.artifact.kind !== "file") throw new Error(`${f.name} is not offered as a file: ${JSON.stringify(offered)}`);
      expect(readFileSync(offered.artifact.path).equals(r.files[f.name] as Buffer), f.name).toBe(true);
    }
  }

  /** After a fault: nothing temporary, the release whole or absent; then the retry succeeds and leaves nothing uploaded behind. */
  async function expectRecovered(fleet: Fleet, data: string, r: StandIn, outcome: "published" | "absent"): Promise<void> {
    expect(temporaryEntries(data)).toEqual([]);
    expect(await publishedState(fleet, data, r)).toBe(outcome);
    await publishInProcess(fleet, r);
    expect(await publishedState(fleet, data, r)).toBe("published");
    await expectServed(fleet, r);
    expect(temporaryEntries(data)).toEqual([]);
    expect(filesBelow(join(data, "incoming"))).toEqual([]);
    expect(await fleet.db.upload("demo", r.manifest.version)).toBeUndefined();
    expect((await fleet.db.auditLog()).filter((e) => e.action === "commit" && e.detail.version === r.manifest.version)).toHaveLength(1);
  }

  // A transaction whose statement matching `pattern` fails once (after the statements before it ran).
  function failInTransaction(fleet: Fleet, pattern: RegExp, error: () => Error): void {
    const db = fleet.db;
    const transaction = db.transaction.bind(db);
    let armed = true;
    vi.spyOn(db, "transaction").mockImplementation(<T>(fn: (tx: Transaction<Database>) => Promise<T>) =>
      transaction((tx) =>
        fn(
          hookStatements(tx, pattern, {
            before: () => {
              if (!armed) return;
              armed = false;
              throw error();
            },
          }),
        ),
      ),
    );
  }

  /** Each injected fault: the step and what fails there, the error the publish gets, and what is left. */
  const faults: [string, (fleet: Fleet) => void, RegExp, "published" | "absent"][] = [
    ["begin: the database fails", (f) => void vi.spyOn(f.db, "beginUpload").mockRejectedValueOnce(dbDown()), /^Connection terminated/, "absent"],
    [
      "begin: the store cannot clear an earlier attempt (disk full)",
      (f) => void vi.spyOn(f.artifacts, "discard").mockRejectedValueOnce(full()),
      /^ENOSPC/,
      "absent",
    ],
    [
      "upload of the second file: the disk fills up part-way",
      () => {
        disk.bytesLeft = 2048 + 1000;
      },
      /^ENOSPC: no space left on device, write$/,
      "absent",
    ],
    [
      "upload of the second file: the database fails",
      (f) => {
        const upload = f.db.upload.bind(f.db);
        let calls = 0;
        vi.spyOn(f.db, "upload").mockImplementation((image, version) => (++calls === 2 ? Promise.reject(dbDown()) : upload(image, version)));
      },
      /^Connection terminated/,
      "absent",
    ],
    ["commit, the store's step: the disk is full", (f) => void vi.spyOn(f.artifacts, "commit").mockRejectedValueOnce(full()), /^ENOSPC/, "absent"],
    [
      "commit, the store's step: the database fails before anything moves",
      (f) => void vi.spyOn(f.db, "releaseFile").mockRejectedValueOnce(dbDown()),
      /^Connection terminated/,
      "absent",
    ],
    [
      "commit, the database's step: the database fails",
      (f) => void vi.spyOn(f.db, "commitRelease").mockRejectedValueOnce(dbDown()),
      /^Connection terminated/,
      "absent",
    ],
    [
      "commit, the database's step: a statement of the transaction fails",
      (f) => failInTransaction(f, /^insert into "release_files" /, dbDown),
      /^Connection terminated/,
      "absent",
    ],
    [
      "commit, the database's step: the database's disk is full",
      (f) => failInTransaction(f, /^insert into "audit" /, () => Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" })),
      /^database or disk is full$/,
      "absent",
    ],
    [
      "commit, the database's step: the release's signed indexes cannot be recorded",
      (f) => failInTransaction(f, /^insert into "release_indexes" /, dbDown),
      /^Connection terminated/,
      "absent",
    ],
    ["promote: the database fails", (f) => void vi.spyOn(f.db, "saveChannel").mockRejectedValueOnce(dbDown()), /^Connection terminated/, "published"],
    [
      "promote: the database's disk is full",
      (f) => failInTransaction(f, /^insert into "rollout_changes" /, () => Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" })),
      /^database or disk is full$/,
      "published",
    ],
  ];

  it.each(faults)("recovers from a fault at %s", async (_what, inject, error, outcome) => {
    const where = await place();
    const fleet = await start(where);
    const r = await standInRelease("demo", "1.0");
    const errors: Error[] = [];
    fleet.onError = (e) => errors.push(e);
    inject(fleet);
    await expect(publishInProcess(fleet, r)).rejects.toThrow(error);
    expect(errors).toEqual([]);
    disk.bytesLeft = undefined;
    // No restart in between: the failed request itself left nothing behind.
    await expectRecovered(fleet, where.data, r, outcome);
  });

  /** Runs a server that publishes `r` into `where` and kills itself at `killAt`. */
  async function killedPublish(where: { data: string; database?: string }, r: StandIn, killAt: KillPoint): Promise<void> {
    const dir = tempDir("basalt-release-");
    writeFileSync(join(dir, "release.json"), JSON.stringify(r.manifest));
    for (const [name, bytes] of Object.entries(r.files)) writeFileSync(join(dir, name), bytes);
    const child = spawn(process.execPath, ["--import", "tsx", "tests/support/publish-child.ts", JSON.stringify({ ...where, release: dir, killAt })], {
      cwd: join(import.meta.dirname, "../.."),
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on("exit", (c, s) => resolve([c, s])));
    expect({ code, signal, stderr }).toEqual({ code: null, signal: "SIGKILL", stderr: "" });
  }

  const kills = (
    [
      ["begin", "absent"],
      ["upload", "absent"],
      ["commit-store", "absent"],
      // The store's commit went through: the restarted server records it.
      ["commit-db", "published"],
      ["commit-db-transaction", "published"],
      ["promote", "published"],
    ] as const
  ).map(([killAt, outcome]) => [killAt, KILL_POINTS[killAt], outcome] as const);

  it.each(kills)(
    "recovers from a server killed at %s (%s)",
    async (killAt, _when, outcome) => {
      const where = await place();
      const r = await standInRelease("demo", "1.0");
      await killedPublish(where, r, killAt);
      if (killAt === "upload") expect(temporaryEntries(where.data)).toHaveLength(1);
      const fleet = await start(where);
      await expectRecovered(fleet, where.data, r, outcome);
    },
    60_000,
  );

  it("finishes a commit killed before the database recorded it when the commit, or the whole publish, is retried", async () => {
    for (const retry of ["commit", "publish"] as const) {
      const where = await place();
      const r = await standInRelease("demo", "1.0");
      await killedPublish(where, r, "commit-db");
      // Without the start-up recovery: the client's retry alone finishes it.
      const fleet = await openFleet({ ...where, recover: false });
      open.push(fleet);
      expect(await publishedState(fleet, where.data, r)).toMatch(/^half-published: release row absent/);
      if (retry === "commit") {
        expect(await fleet.commitRelease("demo", "1.0", "test")).toMatchObject({ id: "demo", version: "1.0" });
        await fleet.promote("demo", "stable", "1.0", "test");
      } else await publishInProcess(fleet, r);
      expect(await publishedState(fleet, where.data, r)).toBe("published");
      await expectServed(fleet, r);
    }
  }, 60_000);

  it("leaves a commit whose database is unreachable throughout for a retry to finish", async () => {
    const where = await place();
    const fleet = await start(where);
    const r = await standInRelease("demo", "1.0");
    vi.spyOn(fleet.db, "commitRelease").mockRejectedValueOnce(dbDown());
    // The undo cannot ask the database whether the commit is still this upload's: it moves nothing.
    vi.spyOn(fleet.db, "suspendUpload").mockRejectedValueOnce(dbDown());
    const errors: string[] = [];
    fleet.onError = (e, what) => errors.push(`${what}: ${e.message}`);
    await expect(publishInProcess(fleet, r)).rejects.toThrow("Connection terminated");
    expect(errors).toEqual(["undoing the commit of demo 1.0 in the artifact store: Connection terminated unexpectedly"]);
    expect(await publishedState(fleet, where.data, r)).toMatch(/^half-published: release row absent/);
    expect(await fleet.recoverReleases()).toHaveLength(1);
    expect(await publishedState(fleet, where.data, r)).toBe("published");
    await expectRecovered(fleet, where.data, r, "published");
  });

  it("never records an earlier attempt's files for a rebuilt release whose begin stopped before it cleared them", async () => {
    const where = await place();
    const fleet = await start(where);
    const first = await standInRelease("demo", "1.0");
    // The first attempt's commit moved its files, and the database was gone for the record and the undo.
    vi.spyOn(fleet.db, "commitRelease").mockRejectedValueOnce(dbDown());
    vi.spyOn(fleet.db, "suspendUpload").mockRejectedValueOnce(dbDown());
    fleet.onError = () => undefined;
    await expect(publishInProcess(fleet, first)).rejects.toThrow("Connection terminated");
    // A rebuild of 1.0: the same names and sizes, other bytes. Its begin stops before the store is cleared.
    const rebuilt: StandIn = {
      manifest: { ...first.manifest },
      files: Object.fromEntries(Object.entries(first.files).map(([name, b]) => [name, Buffer.from(b.map((x) => x ^ 0xff))])),
    };
    rebuilt.manifest = await signedManifest(
      "demo",
      "1.0",
      first.manifest.files.map((f) => ({ ...f, sha256: sha256(rebuilt.files[f.name]) })),
    );
    vi.spyOn(fleet.artifacts, "discard").mockRejectedValueOnce(full());
    await expect(publishInProcess(fleet, rebuilt)).rejects.toThrow("ENOSPC");
    // A server starting now must not take the first attempt's files for the rebuild's.
    expect(await fleet.recoverReleases()).toEqual([]);
    expect(await fleet.db.release("demo", "1.0")).toBeUndefined();
    await publishInProcess(fleet, rebuilt);
    expect(await publishedState(fleet, where.data, rebuilt)).toBe("published");
    await expectServed(fleet, rebuilt);
  });

  it("answers a retried begin and commit of a published release with the release, and refuses another manifest for it", async () => {
    const where = await place();
    const fleet = await start(where);
    const r = await standInRelease("demo", "1.0");
    await publishInProcess(fleet, r);
    // The same files, written again (another creation time): the commit's answer was lost.
    expect(await fleet.beginRelease({ ...r.manifest, createdAt: new Date(0).toISOString() })).toEqual({ committed: true });
    expect(await fleet.commitRelease("demo", "1.0", "test")).toEqual(r.manifest);
    const other = await standInRelease("demo", "1.0");
    const refused = await fleet.beginRelease(other.manifest).catch((e: Error) => e);
    expect(refused).toBeInstanceOf(ConflictError);
    expect((refused as Error).message).toBe("demo 1.0 is already published; releases are immutable");
    const changed = await signedManifest(
      "demo",
      "1.0",
      r.manifest.files.map((f, i) => (i === 0 ? { ...f, sha256: "0".repeat(64) } : f)),
    );
    await expect(fleet.beginRelease(changed)).rejects.toBeInstanceOf(ConflictError);
    // Signed again (another signature, the same files): still this release, whose indexes stay as published.
    const resigned = await signedManifest("demo", "1.0", r.manifest.files);
    expect(await fleet.beginRelease(resigned)).toEqual({ committed: true });
    expect((await fleet.db.releaseIndex("demo", "1.0", "release"))?.signature.toString("base64")).toBe(r.manifest.indexes.release.signature.base64);
    await expect(fleet.commitRelease("demo", "2.0", "test")).rejects.toBeInstanceOf(NotFoundError);
    expect(await publishedState(fleet, where.data, r)).toBe("published");
    expect(await fleet.db.upload("demo", "1.0")).toBeUndefined();
  });

  it("refuses a commit whose upload was restarted after it read it, and leaves the restarted upload's files alone", async () => {
    const where = await place();
    const fleet = await start(where);
    const r = await standInRelease("demo", "1.0");
    await fleet.beginRelease(r.manifest);
    for (const [name, b] of Object.entries(r.files)) await fleet.putFile("demo", "1.0", name, Readable.from([b]));
    // Another client begins the same version again while this commit is between its two steps.
    const record = fleet.db.commitRelease.bind(fleet.db);
    vi.spyOn(fleet.db, "commitRelease").mockImplementationOnce(async (...args) => {
      await fleet.beginRelease(r.manifest);
      return record(...args);
    });
    const refused = await fleet.commitRelease("demo", "1.0", "test").catch((e: Error) => e);
    expect(refused).toBeInstanceOf(ConflictError);
    expect((refused as Error).message).toBe("the upload of demo 1.0 was restarted while it was committed; upload it again");
    expect(await publishedState(fleet, where.data, r)).toBe("absent");
    await expectRecovered(fleet, where.data, r, "absent");
  });

  // Finding 1: two pending versions that named the same file. The manifest rules keep that from
  // happening now; the database refuses it too, and a commit checks again before moving anything.
  describe("a file name another version has", () => {
    /** An upload row as a server without these checks (or before them) could have left it. */
    async function legacyUpload(fleet: Fleet, version: string, files: StandIn["manifest"]["files"]): Promise<void> {
      const manifest = await signedManifest("demo", version, files);
      await fleet.db.kysely
        .insertInto("uploads")
        .values({ image: "demo", version, manifest: JSON.stringify(manifest), started_at: 0 })
        .execute();
    }

    it("is refused at begin when another version's upload in progress reserved it", async () => {
      const where = await place();
      const fleet = await start(where);
      const r = await standInRelease("demo", "2.0");
      await legacyUpload(fleet, "1.5", r.manifest.files.slice(0, 1));
      const refused = await fleet.beginRelease(r.manifest).catch((e: Error) => e);
      expect(refused).toBeInstanceOf(ConflictError);
      expect((refused as Error).message).toBe(`${r.manifest.files[0]?.name} is reserved by the upload of demo 1.5 in progress`);
      expect(await fleet.db.upload("demo", "2.0")).toBeUndefined();
      // The database refuses it whatever the manifest rules say.
      const published = await standInRelease("demo", "1.0");
      await publishInProcess(fleet, published);
      expect(await fleet.db.beginUpload({ ...r.manifest, files: published.manifest.files }, 0)).toEqual({
        status: "taken",
        name: published.manifest.files[0]?.name,
        version: "1.0",
        committed: true,
      });
    });

    it("is refused at commit before any file moves, leaving no version 'already published' but in no table", async () => {
      const where = await place();
      const fleet = await start(where);
      const first = await standInRelease("demo", "1.0");
      await publishInProcess(fleet, first);
      // 2.0's upload names 1.0's UKI (begun before the checks existed), and its files are uploaded.
      const second = await standInRelease("demo", "2.0");
      const uki = first.manifest.files[0];
      if (!uki) throw new Error("no UKI");
      await legacyUpload(fleet, "2.0", [uki, ...second.manifest.files.slice(1)]);
      await fleet.putFile("demo", "2.0", uki.name, Readable.from([first.files[uki.name] as Buffer]));
      const root = second.manifest.files[1];
      if (!root) throw new Error("no root file");
      await fleet.putFile("demo", "2.0", root.name, Readable.from([second.files[root.name] as Buffer]));

      const moved = vi.spyOn(fleet.artifacts, "commit");
      const refused = await fleet.commitRelease("demo", "2.0", "test").catch((e: Error) => e);
      expect(refused).toBeInstanceOf(ConflictError);
      expect((refused as Error).message).toBe(`${uki.name} belongs to demo 1.0 already`);
      expect(moved).not.toHaveBeenCalled();
      // Nothing moved, nothing recorded, 1.0 untouched.
      expect(filesBelow(join(where.data, "releases/demo"))).toEqual(first.manifest.files.map((f) => `1.0/${f.name}`).sort());
      expect(filesBelow(join(where.data, "incoming/demo/2.0"))).toEqual([uki.name, root.name].sort());
      expect(await fleet.db.release("demo", "2.0")).toBeUndefined();
      expect(await publishedState(fleet, where.data, first)).toBe("published");
      // 2.0 is not "already published": its proper upload goes through.
      await expectRecovered(fleet, where.data, second, "absent");
    });

    it("is refused at the database's step of a commit even when the check before it passed", async () => {
      const where = await place();
      const fleet = await start(where);
      const first = await standInRelease("demo", "1.0");
      await publishInProcess(fleet, first);
      const uki = first.manifest.files[0];
      if (!uki) throw new Error("no UKI");
      await legacyUpload(fleet, "2.0", [uki]);
      await fleet.putFile("demo", "2.0", uki.name, Readable.from([first.files[uki.name] as Buffer]));
      // The check before the store's step misses it (another replica committed 1.0 in between).
      vi.spyOn(fleet.db, "releaseFile").mockResolvedValue(undefined);
      await expect(fleet.commitRelease("demo", "2.0", "test")).rejects.toThrow(`${uki.name} belongs to demo 1.0 already`);
      // The store's commit was undone: 2.0's file is back in its upload.
      expect(filesBelow(join(where.data, "releases/demo"))).toEqual(first.manifest.files.map((f) => `1.0/${f.name}`).sort());
      expect(filesBelow(join(where.data, "incoming/demo/2.0"))).toEqual([uki.name]);
      expect(await fleet.db.release("demo", "2.0")).toBeUndefined();
    });
  });

  it("refuses with user errors: no upload in progress, a file not in the manifest, a file not uploaded completely", async () => {
    const where = await place();
    const fleet = await start(where);
    const r = await standInRelease("demo", "1.0");
    await expect(fleet.putFile("demo", "1.0", "demo_1.0.efi", Readable.from([Buffer.alloc(1)]))).rejects.toBeInstanceOf(NotFoundError);
    await expect(fleet.commitRelease("demo", "1.0", "test")).rejects.toThrow("no upload of demo 1.0 in progress");
    await fleet.beginRelease(r.manifest);
    await expect(fleet.putFile("demo", "1.0", "demo_1.0.other", Readable.from([Buffer.alloc(1)]))).rejects.toBeInstanceOf(NotFoundError);
    const uki = r.manifest.files[0];
    if (!uki) throw new Error("no UKI");
    await fleet.putFile("demo", "1.0", uki.name, Readable.from([r.files[uki.name] as Buffer]));
    const incomplete = await fleet.commitRelease("demo", "1.0", "test").catch((e: Error) => e);
    expect(incomplete).toBeInstanceOf(UserError);
    expect((incomplete as Error).message).toMatch(/^demo_1\.0\.root-x86-64\.[0-9a-f-]{36}\.raw\.xz has not been uploaded completely$/);
    expect(await publishedState(fleet, where.data, r)).toBe("absent");
  });
});

describe("a disk that fills up", () => {
  it("fails the write the way a full file system does (the injection the tests above rely on)", async () => {
    const { createWriteStream } = await import("node:fs");
    const dir = tempDir("basalt-full-");
    mkdirSync(join(dir, "x"));
    disk.bytesLeft = 10;
    const out = createWriteStream(join(dir, "x/f"));
    const done = new Promise<void>((resolve, reject) => out.on("error", reject).on("finish", () => resolve()));
    out.end(Buffer.alloc(100));
    await expect(done).rejects.toMatchObject({ code: "ENOSPC" });
    expect(readFileSync(join(dir, "x/f"))).toHaveLength(10);
  });
});
