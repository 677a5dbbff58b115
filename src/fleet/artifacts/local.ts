// The default store: one local directory (or shared storage several replicas mount).
import { randomUUID } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { UserError } from "../../errors.js";
import { type Artifact, type ArtifactStore, type FileEntry, releaseKey, releasePrefix, verifying } from "./store.js";

export class LocalArtifactStore implements ArtifactStore {
  readonly where: string;

  constructor(readonly root: string) {
    for (const d of ["releases", "incoming"]) mkdirSync(join(root, d), { recursive: true });
    this.where = root;
  }

  private incoming(id: string, version: string): string {
    return join(this.root, releasePrefix(id, version, "incoming"));
  }

  private final(id: string, version: string): string {
    return join(this.root, releasePrefix(id, version));
  }

  async stage(id: string, version: string, body: NodeJS.ReadableStream, expected: FileEntry): Promise<void> {
    const path = join(this.root, releaseKey(id, version, expected.name, "incoming"));
    mkdirSync(dirname(path), { recursive: true });
    const tmp = join(dirname(path), `.${expected.name}.${randomUUID()}`);
    const check = verifying(expected);
    try {
      await pipeline(body, check, createWriteStream(tmp));
      check.check();
      renameSync(tmp, path);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  async stagedSize(id: string, version: string, name: string): Promise<number | undefined> {
    const p = join(this.root, releaseKey(id, version, name, "incoming"));
    return existsSync(p) ? statSync(p).size : undefined;
  }

  async commit(id: string, version: string): Promise<void> {
    const final = this.final(id, version);
    const incoming = this.incoming(id, version);
    // A commit that moved the files but did not get to record the release is finished by a retry.
    if (existsSync(final) && !existsSync(incoming)) return;
    if (existsSync(final)) throw new UserError(`${id} ${version} is already published; releases are immutable`);
    mkdirSync(join(final, ".."), { recursive: true });
    renameSync(incoming, final);
  }

  async discard(id: string, version: string): Promise<void> {
    rmSync(this.incoming(id, version), { recursive: true, force: true });
  }

  async has(id: string, version: string, name: string): Promise<boolean> {
    return existsSync(join(this.root, releaseKey(id, version, name)));
  }

  async locate(id: string, version: string, file: Pick<FileEntry, "name" | "size">): Promise<Artifact | undefined> {
    const path = join(this.root, releaseKey(id, version, file.name));
    if (!existsSync(path)) return undefined;
    return { kind: "file", path, size: statSync(path).size };
  }
}
