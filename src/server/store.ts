// Where the update server keeps releases, channels and signed index snapshots. The interface is
// what a deployment can back with something else (an S3-compatible bucket for the files); the
// default keeps everything in one local directory:
//   releases/<id>/<version>/<files> + release.json     immutable once committed
//   snapshots/<id>/<sha256 of index>/SHA256SUMS{,.gpg,.asc}   immutable, content-addressed
//   channels/<id>/<channel>.json                       swapped atomically (rename)
//   audit.jsonl                                        who published or promoted what, when
import { createHash, randomUUID } from "node:crypto";
import { appendFileSync, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { UserError } from "../errors.js";
import type { ReleaseManifest } from "../release/release.js";
import { checkFileName, renderSha256Sums } from "../release/sha256sums.js";

export const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// sysupdate's version characters (no '~', no '^'); '+' is refused too: UKI targets use '+@l-@d'.
export const VERSION = /^[A-Za-z0-9][A-Za-z0-9.,_-]{0,63}$/;

export interface ChannelState {
  id: string;
  channel: string;
  /** Versions offered, oldest first; the index lists all of them. */
  versions: string[];
  /** Content hash of the current signed index. */
  snapshot: string;
  updatedAt: string;
}

export interface IndexSnapshot {
  hash: string;
  index: Buffer;
  signature: Buffer;
  armored: string;
}

export type Signer = (index: Buffer) => Promise<{ binary: Buffer; armored: string }>;

export interface FileRef {
  path: string;
  size: number;
}

export interface ReleaseStore {
  hasRelease(id: string, version: string): boolean;
  release(id: string, version: string): ReleaseManifest | undefined;
  /** Starts an upload: the manifest says which files, sizes and hashes to expect. */
  beginRelease(manifest: ReleaseManifest): void;
  /** Stores one file of an uncommitted release, checking its SHA-256 against the manifest. */
  putFile(id: string, version: string, name: string, body: Readable): Promise<void>;
  /** Makes an uploaded release visible; every file must be there and match. */
  commitRelease(id: string, version: string): ReleaseManifest;
  channel(id: string, channel: string): ChannelState | undefined;
  channels(): ChannelState[];
  /** Adds a version to a channel and swaps in a newly signed index. */
  promote(id: string, channel: string, version: string, actor: string): Promise<ChannelState>;
  snapshot(id: string, hash: string): IndexSnapshot | undefined;
  /** A file of a version in the channel, or undefined when the channel does not offer it. */
  file(state: ChannelState, name: string): FileRef | undefined;
}

function writeAtomic(path: string, data: string | Buffer): void {
  const tmp = `${path}.tmp-${randomUUID()}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

export function checkName(kind: string, value: string, re = NAME): void {
  if (!re.test(value)) throw new UserError(`invalid ${kind}: ${JSON.stringify(value)}`);
}

export class LocalStore implements ReleaseStore {
  /** How many versions a channel's index keeps listing (devices only ever move forward). */
  readonly keepVersions = 3;
  private readonly manifests = new Map<string, ReleaseManifest>();

  constructor(
    readonly root: string,
    private readonly sign: Signer,
  ) {
    for (const d of ["releases", "snapshots", "channels", "incoming"]) mkdirSync(join(root, d), { recursive: true });
  }

  private releaseDir(id: string, version: string): string {
    checkName("image id", id);
    checkName("version", version, VERSION);
    return join(this.root, "releases", id, version);
  }

  private incomingDir(id: string, version: string): string {
    return join(this.root, "incoming", id, version);
  }

  hasRelease(id: string, version: string): boolean {
    return existsSync(join(this.releaseDir(id, version), "release.json"));
  }

  release(id: string, version: string): ReleaseManifest | undefined {
    const dir = this.releaseDir(id, version);
    // Committed releases never change, so each release.json is read once, not on every download.
    const cached = this.manifests.get(dir);
    if (cached) return cached;
    const f = join(dir, "release.json");
    if (!existsSync(f)) return undefined;
    const manifest = JSON.parse(readFileSync(f, "utf8")) as ReleaseManifest;
    this.manifests.set(dir, manifest);
    return manifest;
  }

  beginRelease(manifest: ReleaseManifest): void {
    this.releaseDir(manifest.id, manifest.version);
    if (this.hasRelease(manifest.id, manifest.version)) throw new UserError(`${manifest.id} ${manifest.version} is already published; releases are immutable`);
    for (const f of manifest.files) {
      checkFileName(f.name);
      if (!/^[0-9a-f]{64}$/.test(f.sha256) || !Number.isSafeInteger(f.size)) throw new UserError(`release manifest: bad entry for ${f.name}`);
    }
    const dir = this.incomingDir(manifest.id, manifest.version);
    mkdirSync(dir, { recursive: true });
    writeAtomic(join(dir, ".manifest.json"), JSON.stringify(manifest));
  }

  private pending(id: string, version: string): ReleaseManifest {
    this.releaseDir(id, version);
    const f = join(this.incomingDir(id, version), ".manifest.json");
    if (!existsSync(f)) throw new UserError(`no upload of ${id} ${version} in progress`);
    return JSON.parse(readFileSync(f, "utf8")) as ReleaseManifest;
  }

  async putFile(id: string, version: string, name: string, body: Readable): Promise<void> {
    checkFileName(name);
    const manifest = this.pending(id, version);
    const entry = manifest.files.find((f) => f.name === name);
    if (!entry) throw new UserError(`${name} is not a file of ${id} ${version}`);
    const dir = this.incomingDir(id, version);
    const tmp = join(dir, `.${name}.${randomUUID()}`);
    const hash = createHash("sha256");
    body.on("data", (chunk: Buffer) => hash.update(chunk));
    try {
      await pipeline(body, createWriteStream(tmp));
      const got = hash.digest("hex");
      if (got !== entry.sha256) throw new UserError(`${name}: SHA-256 ${got} does not match the release manifest (${entry.sha256})`);
      renameSync(tmp, join(dir, name));
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  commitRelease(id: string, version: string): ReleaseManifest {
    const manifest = this.pending(id, version);
    const final = this.releaseDir(id, version);
    if (this.hasRelease(id, version)) throw new UserError(`${id} ${version} is already published; releases are immutable`);
    const dir = this.incomingDir(id, version);
    for (const f of manifest.files) {
      const p = join(dir, f.name);
      if (!existsSync(p) || statSync(p).size !== f.size) throw new UserError(`${f.name} has not been uploaded completely`);
    }
    rmSync(join(dir, ".manifest.json"));
    writeFileSync(join(dir, "release.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    mkdirSync(join(final, ".."), { recursive: true });
    renameSync(dir, final);
    return manifest;
  }

  channel(id: string, channel: string): ChannelState | undefined {
    checkName("image id", id);
    checkName("channel", channel);
    const f = join(this.root, "channels", id, `${channel}.json`);
    return existsSync(f) ? (JSON.parse(readFileSync(f, "utf8")) as ChannelState) : undefined;
  }

  channels(): ChannelState[] {
    const out: ChannelState[] = [];
    const base = join(this.root, "channels");
    for (const id of readdirSync(base)) {
      for (const f of readdirSync(join(base, id)).filter((n) => n.endsWith(".json"))) {
        out.push(JSON.parse(readFileSync(join(base, id, f), "utf8")) as ChannelState);
      }
    }
    return out;
  }

  async promote(id: string, channel: string, version: string, actor: string): Promise<ChannelState> {
    const release = this.release(id, version);
    if (!release) throw new UserError(`${id} ${version} has not been published`);
    const prev = this.channel(id, channel);
    const versions = [...(prev?.versions ?? []).filter((v) => v !== version), version].slice(-this.keepVersions);
    const entries = versions.flatMap((v) => (this.release(id, v) as ReleaseManifest).files.map((f) => ({ name: f.name, sha256: f.sha256 })));
    const index = Buffer.from(renderSha256Sums(entries));
    const hash = createHash("sha256").update(index).digest("hex");
    const snapDir = join(this.root, "snapshots", id, hash);
    if (!existsSync(join(snapDir, "SHA256SUMS.gpg"))) {
      const sig = await this.sign(index);
      const tmp = `${snapDir}.tmp-${randomUUID()}`;
      mkdirSync(tmp, { recursive: true });
      writeFileSync(join(tmp, "SHA256SUMS"), index);
      writeFileSync(join(tmp, "SHA256SUMS.gpg"), sig.binary);
      writeFileSync(join(tmp, "SHA256SUMS.asc"), sig.armored);
      rmSync(snapDir, { recursive: true, force: true });
      renameSync(tmp, snapDir);
    }
    const state: ChannelState = { id, channel, versions, snapshot: hash, updatedAt: new Date().toISOString() };
    mkdirSync(join(this.root, "channels", id), { recursive: true });
    // The snapshot and every file it lists exist before the channel points at it.
    writeAtomic(join(this.root, "channels", id, `${channel}.json`), `${JSON.stringify(state, null, 2)}\n`);
    appendFileSync(
      join(this.root, "audit.jsonl"),
      `${JSON.stringify({ at: state.updatedAt, actor, action: "promote", id, channel, version, snapshot: hash })}\n`,
    );
    return state;
  }

  snapshot(id: string, hash: string): IndexSnapshot | undefined {
    if (!/^[0-9a-f]{64}$/.test(hash)) return undefined;
    const dir = join(this.root, "snapshots", id, hash);
    if (!existsSync(join(dir, "SHA256SUMS.gpg"))) return undefined;
    return {
      hash,
      index: readFileSync(join(dir, "SHA256SUMS")),
      signature: readFileSync(join(dir, "SHA256SUMS.gpg")),
      armored: readFileSync(join(dir, "SHA256SUMS.asc"), "utf8"),
    };
  }

  file(state: ChannelState, name: string): FileRef | undefined {
    for (const v of state.versions) {
      const m = this.release(state.id, v);
      if (m?.files.some((f) => f.name === name)) {
        const path = join(this.releaseDir(state.id, v), name);
        return { path, size: statSync(path).size };
      }
    }
    return undefined;
  }
}
