// Where the update server keeps release files. Everything else (releases, channels, signed index
// snapshots, devices) lives in the fleet database; this holds only the large, immutable bytes, so a
// deployment can put them on shared storage or behind an S3-compatible bucket or CDN (`locate`
// then answers with a URL to redirect to). The default keeps them in one local directory:
//   incoming/<id>/<version>/<files>     uploads in progress
//   releases/<id>/<version>/<files>     committed, never changed
import { createHash, randomUUID } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { UserError } from "../errors.js";
import { checkFileName } from "../release/sha256sums.js";

export const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// sysupdate's version characters (no '~', no '^'); '+' is refused too: UKI targets use '+@l-@d'.
export const VERSION = /^[A-Za-z0-9][A-Za-z0-9.,_-]{0,63}$/;

export function checkName(kind: string, value: string, re = NAME): void {
  if (!re.test(value)) throw new UserError(`invalid ${kind}: ${JSON.stringify(value)}`);
}

/** A committed file: on local disk (served with Range, ETag, Last-Modified), or at a URL to redirect to. */
export type Artifact = { kind: "file"; path: string; size: number } | { kind: "url"; url: string; size: number };

export interface ArtifactStore {
  /** Streams one file of an upload into staging; refuses it unless its size and SHA-256 are as expected. */
  stage(id: string, version: string, name: string, body: Readable, expected: { size: number; sha256: string }): Promise<void>;
  /** Size of a staged file, if it is there. */
  stagedSize(id: string, version: string, name: string): number | undefined;
  /** Makes the staged files of a release permanent, all at once; repeating a finished commit is a no-op. */
  commit(id: string, version: string): void;
  /** Drops an unfinished upload. */
  discard(id: string, version: string): void;
  locate(id: string, version: string, name: string): Artifact | undefined;
}

export class LocalArtifactStore implements ArtifactStore {
  constructor(readonly root: string) {
    for (const d of ["releases", "incoming"]) mkdirSync(join(root, d), { recursive: true });
  }

  private dir(area: "releases" | "incoming", id: string, version: string): string {
    checkName("image id", id);
    checkName("version", version, VERSION);
    return join(this.root, area, id, version);
  }

  async stage(id: string, version: string, name: string, body: Readable, expected: { size: number; sha256: string }): Promise<void> {
    checkFileName(name);
    const dir = this.dir("incoming", id, version);
    mkdirSync(dir, { recursive: true });
    const tmp = join(dir, `.${name}.${randomUUID()}`);
    const hash = createHash("sha256");
    let size = 0;
    body.on("data", (chunk: Buffer) => {
      hash.update(chunk);
      size += chunk.length;
    });
    try {
      await pipeline(body, createWriteStream(tmp));
      const got = hash.digest("hex");
      if (size !== expected.size) throw new UserError(`${name}: ${size} bytes received, the release manifest says ${expected.size}`);
      if (got !== expected.sha256) throw new UserError(`${name}: SHA-256 ${got} does not match the release manifest (${expected.sha256})`);
      renameSync(tmp, join(dir, name));
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  stagedSize(id: string, version: string, name: string): number | undefined {
    checkFileName(name);
    const p = join(this.dir("incoming", id, version), name);
    return existsSync(p) ? statSync(p).size : undefined;
  }

  commit(id: string, version: string): void {
    const final = this.dir("releases", id, version);
    const incoming = this.dir("incoming", id, version);
    // A commit that moved the files but did not get to record the release is finished by a retry.
    if (existsSync(final) && !existsSync(incoming)) return;
    if (existsSync(final)) throw new UserError(`${id} ${version} is already published; releases are immutable`);
    mkdirSync(join(final, ".."), { recursive: true });
    renameSync(incoming, final);
  }

  discard(id: string, version: string): void {
    rmSync(this.dir("incoming", id, version), { recursive: true, force: true });
  }

  locate(id: string, version: string, name: string): Artifact | undefined {
    checkFileName(name);
    const path = join(this.dir("releases", id, version), name);
    if (!existsSync(path)) return undefined;
    return { kind: "file", path, size: statSync(path).size };
  }
}
