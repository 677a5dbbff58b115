// Where the update server keeps release files. Everything else (releases and their signed indexes,
// channels, devices) lives in the fleet database; a store holds only the large, immutable bytes.
// Every store lays them out the same way, so a CDN can front any of them (`redirecting` below):
//   incoming/<id>/<version>/<file>     uploads in progress
//   releases/<id>/<version>/<file>     committed, never changed
// The database says which releases are published: a file is offered only once its release is
// recorded there, and the release section of fleet.ts orders the two so that a failure or a killed
// process at any step leaves a release either published whole or retryable.
// Stores: a local directory (local.ts, the default) and an S3-compatible bucket (s3.ts).
import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import { UserError } from "../../errors.js";
import { checkFileName } from "../../release/sha256sums.js";

export const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// sysupdate's version characters (no '~', no '^'); '+' is refused too: UKI targets use '+@l-@d'.
export const VERSION = /^[A-Za-z0-9][A-Za-z0-9.,_-]{0,63}$/;

export function checkName(kind: string, value: string, re = NAME): void {
  if (!re.test(value)) throw new UserError(`invalid ${kind}: ${JSON.stringify(value)}`);
}

/**
 * How long a temporary file (or an unfinished multipart upload) nobody writes to any more is kept:
 * then its writer is taken to be gone, whatever host it ran on.
 */
export const STALE_AFTER_MS = 60 * 60 * 1000;

/** A committed file: on local disk (served with Range, ETag, Last-Modified), or at a URL to redirect to. */
export type Artifact = { kind: "file"; path: string; size: number } | { kind: "url"; url: string; size: number };

export interface FileEntry {
  name: string;
  size: number;
  sha256: string;
}

export interface ArtifactStore {
  /** Where the files are, for messages and the start-up line (never with credentials). */
  readonly where: string;
  /**
   * Streams one file of an upload into the store; refuses it (and keeps none of it, not even a
   * temporary file) unless its size and SHA-256 are as expected.
   */
  stage(id: string, version: string, body: NodeJS.ReadableStream, expected: FileEntry): Promise<void>;
  /** Size of an uploaded file, if it is there. */
  stagedSize(id: string, version: string, name: string): Promise<number | undefined>;
  /** Size of a committed file, if it is there. */
  committedSize(id: string, version: string, name: string): Promise<number | undefined>;
  /**
   * Makes the uploaded files of a release permanent, all at once; repeating a finished commit is a
   * no-op, and repeating an interrupted one finishes it.
   */
  commit(id: string, version: string): Promise<void>;
  /**
   * Takes back a commit the database did not record: the files go back to the upload, so the
   * commit can be tried again. Never called for a recorded release.
   */
  uncommit(id: string, version: string): Promise<void>;
  /**
   * Drops everything a release the database does not record has in the store: an unfinished
   * upload, and files a commit moved but did not get to record. Never called for a recorded release.
   */
  discard(id: string, version: string): Promise<void>;
  /**
   * Removes what processes that were killed left behind (temporary files, unfinished multipart
   * uploads), never what a live one is writing; returns what it removed. Runs when the store is opened.
   */
  recover(): Promise<string[]>;
  /** Whether a committed file is there: asked before any device is shown it. */
  has(id: string, version: string, name: string): Promise<boolean>;
  /** How a device gets a committed file the database lists; on the download path, so no round trip to a remote store. */
  locate(id: string, version: string, file: Pick<FileEntry, "name" | "size">): Promise<Artifact | undefined>;
}

/** Where a release's files are below a store's root: `releases/` once committed, `incoming/` while uploaded. */
export function releasePrefix(id: string, version: string, area: "releases" | "incoming" = "releases"): string {
  checkName("image id", id);
  checkName("version", version, VERSION);
  return `${area}/${id}/${version}`;
}

export function releaseKey(id: string, version: string, name: string, area: "releases" | "incoming" = "releases"): string {
  checkFileName(name);
  return `${releasePrefix(id, version, area)}/${name}`;
}

/**
 * A pass-through that counts and hashes what flows through it, and fails before passing on the end
 * of a file that is not what the manifest says (so no store completes it); `check` says the same
 * after the fact.
 */
export function verifying(expected: FileEntry): Transform & { check(): void } {
  const hash = createHash("sha256");
  let size = 0;
  let verdict: UserError | undefined | null = null;
  const judge = (): UserError | undefined => {
    if (verdict !== null) return verdict;
    verdict = undefined;
    if (size !== expected.size) verdict = new UserError(`${expected.name}: ${size} bytes received, the release manifest says ${expected.size}`);
    else {
      const got = hash.digest("hex");
      if (got !== expected.sha256) verdict = new UserError(`${expected.name}: SHA-256 ${got} does not match the release manifest (${expected.sha256})`);
    }
    return verdict;
  };
  const t = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      size += chunk.length;
      // Stop early rather than store a file larger than the manifest says.
      if (size > expected.size) done(new UserError(`${expected.name}: more than the ${expected.size} bytes the release manifest says`));
      else done(null, chunk);
    },
    flush(done) {
      done(judge() ?? null);
    },
  });
  return Object.assign(t, {
    check() {
      const problem = judge();
      if (problem) throw problem;
    },
  });
}

/**
 * Devices fetch committed files from `baseUrl` (a CDN or a public bucket in front of the store)
 * instead of the server; the store still takes uploads. Files are immutable, so any cache may keep them.
 */
export function redirecting(store: ArtifactStore, baseUrl: string): ArtifactStore {
  const base = baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`;
  return {
    where: `${store.where}, downloads from ${base}`,
    stage: (id, version, body, expected) => store.stage(id, version, body, expected),
    stagedSize: (id, version, name) => store.stagedSize(id, version, name),
    committedSize: (id, version, name) => store.committedSize(id, version, name),
    commit: (id, version) => store.commit(id, version),
    uncommit: (id, version) => store.uncommit(id, version),
    discard: (id, version) => store.discard(id, version),
    recover: () => store.recover(),
    has: (id, version, name) => store.has(id, version, name),
    locate: async (id, version, file) => ({ kind: "url", url: new URL(releaseKey(id, version, file.name), base).href, size: file.size }),
  };
}
