// The default store: one local directory (or shared storage several replicas mount). Files come
// into being under a temporary name and are renamed into place, so a reader sees a whole file or
// none; a commit and a discard are one rename of a release's folder each.
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, lstatSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { ConflictError, UserError } from "../../errors.js";
import { type Artifact, type ArtifactStore, type FileEntry, releaseKey, releasePrefix, STALE_AFTER_MS, verifying } from "./store.js";

// Temporary names say who wrote them, so that replicas sharing the directory can tell a killed
// process's leftovers from a live upload: `.tmp.<host>.<pid>.<instance>.<random>`. The instance
// tells this process from an earlier one that had the same pid (a restarted container is pid 1 again).
// A leading '.' is never the start of an image id, a version or a release file name.
const HOST =
  hostname()
    .replace(/[^A-Za-z0-9-]/g, "-")
    .slice(0, 63) || "localhost";
const INSTANCE = randomBytes(4).toString("hex");
const TEMP = /^\.tmp\.([A-Za-z0-9-]+)\.(\d+)\.([0-9a-f]{8})\.[0-9a-f]+$/;

/** A temporary name, by default this process's (tests name other writers'). */
export function temporaryName(writer: { host?: string; pid?: number; instance?: string } = {}): string {
  return `.tmp.${writer.host ?? HOST}.${writer.pid ?? process.pid}.${writer.instance ?? INSTANCE}.${randomBytes(6).toString("hex")}`;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, under another user.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Whether a dot-name in incoming/ was left by a writer that is gone. */
function stale(name: string, modifiedMs: number, now: number): boolean {
  if (now - modifiedMs > STALE_AFTER_MS) return true;
  const m = TEMP.exec(name);
  // Another naming (an older server's temporary files): only by age.
  if (!m || m[1] !== HOST) return false;
  const pid = Number(m[2]);
  return pid === process.pid ? m[3] !== INSTANCE : !alive(pid);
}

const code = (e: unknown) => (e as NodeJS.ErrnoException).code;

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
    const tmp = join(dirname(path), temporaryName());
    // Opened here, not by the stream: a stream opens its file later, and an upload that fails
    // before then would have its temporary file created after the clean-up below.
    const fd = openSync(tmp, "wx", 0o644);
    const check = verifying(expected);
    try {
      await pipeline(body, check, createWriteStream(tmp, { fd, flush: true }));
      check.check();
      renameSync(tmp, path);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  private size(path: string): number | undefined {
    return existsSync(path) ? statSync(path).size : undefined;
  }

  async stagedSize(id: string, version: string, name: string): Promise<number | undefined> {
    return this.size(join(this.root, releaseKey(id, version, name, "incoming")));
  }

  async committedSize(id: string, version: string, name: string): Promise<number | undefined> {
    return this.size(join(this.root, releaseKey(id, version, name)));
  }

  async commit(id: string, version: string): Promise<void> {
    const final = this.final(id, version);
    const incoming = this.incoming(id, version);
    // A commit that moved the files but did not get to record the release is finished by a retry.
    if (existsSync(final) && !existsSync(incoming)) return;
    if (existsSync(final)) throw new ConflictError(`${id} ${version} is already in the store's releases; releases are immutable`);
    mkdirSync(dirname(final), { recursive: true });
    try {
      renameSync(incoming, final);
    } catch (e) {
      if (code(e) !== "ENOENT") throw e;
      // Another commit of the same upload (a replica's, or a recovery's) got there first.
      if (existsSync(final)) return;
      throw new UserError(`${id} ${version}: nothing uploaded`);
    }
  }

  async uncommit(id: string, version: string): Promise<void> {
    const final = this.final(id, version);
    if (!existsSync(final)) return;
    mkdirSync(dirname(this.incoming(id, version)), { recursive: true });
    // Fails (ENOTEMPTY) rather than mix the files with a new upload's.
    renameSync(final, this.incoming(id, version));
  }

  async discard(id: string, version: string): Promise<void> {
    // Each folder out of sight at once, then removed: a process killed half-way leaves a temporary
    // folder that recover() removes, not half an upload or half a release. The upload goes first,
    // so that a commit running at the same moment cannot move it to releases/ after that is cleared.
    for (const dir of [this.incoming(id, version), this.final(id, version)]) {
      const trash = join(this.root, "incoming", temporaryName());
      try {
        renameSync(dir, trash);
      } catch (e) {
        if (code(e) === "ENOENT") continue;
        throw e;
      }
      rmSync(trash, { recursive: true, force: true });
    }
  }

  async recover(): Promise<string[]> {
    const removed: string[] = [];
    const now = Date.now();
    // Temporary names are only ever made in incoming/, incoming/<id>/ and incoming/<id>/<version>/.
    const visit = (dir: string, depth: number) => {
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch (e) {
        if (code(e) === "ENOENT") return;
        throw e;
      }
      for (const name of names) {
        const path = join(dir, name);
        let st: ReturnType<typeof lstatSync>;
        try {
          st = lstatSync(path);
        } catch (e) {
          if (code(e) === "ENOENT") continue;
          throw e;
        }
        if (name.startsWith(".")) {
          if (stale(name, st.mtimeMs, now)) {
            rmSync(path, { recursive: true, force: true });
            removed.push(path);
          }
        } else if (st.isDirectory() && depth < 2) visit(path, depth + 1);
      }
    };
    visit(join(this.root, "incoming"), 0);
    return removed;
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
