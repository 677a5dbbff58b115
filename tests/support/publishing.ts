// Publishing a release the way `basalt publish` drives the API (begin, each file, commit, promote),
// through the same Fleet calls, and what a data directory holds afterwards: shared by the fault
// tests of src/fleet/publish.test.ts and the child process they kill (publish-child.ts).
import { existsSync, lstatSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { ReleaseManifest } from "../../src/contract/release-manifest.js";
import type { Fleet } from "../../src/fleet/fleet.js";

export interface StandIn {
  manifest: ReleaseManifest;
  files: Record<string, Buffer>;
}

/** Where tests/support/publish-child.ts kills itself. */
export const KILL_POINTS = {
  begin: "after the database began the upload, before the store is cleared for it",
  upload: "half-way through writing the second file",
  "commit-store": "before the store commits the files",
  "commit-db": "after the store committed the files, before the database records the release",
  "commit-db-transaction": "inside the database transaction that records the release",
  promote: "after the commit, before the release is offered on the channel",
} as const;
export type KillPoint = keyof typeof KILL_POINTS;

export interface PublishInProcessOptions {
  channel?: string;
  /** Replaces a file's upload (a client that dies half-way); undefined: the file's bytes. */
  body?: (name: string, bytes: Buffer, index: number) => Readable | undefined;
}

/** One publish, start to end, as `basalt publish` drives it (a release published already is only offered). */
export async function publishInProcess(fleet: Fleet, r: StandIn, o: PublishInProcessOptions = {}): Promise<void> {
  const { id, version } = r.manifest;
  const { committed } = await fleet.beginRelease(r.manifest);
  if (!committed) {
    for (const [i, f] of r.manifest.files.entries()) {
      const bytes = r.files[f.name];
      if (!bytes) throw new Error(`no bytes for ${f.name}`);
      await fleet.putFile(id, version, f.name, o.body?.(f.name, bytes, i) ?? Readable.from([bytes]));
    }
    await fleet.commitRelease(id, version, "test");
  }
  await fleet.promote(id, o.channel ?? "stable", version, "test");
}

/** Every dot-named file or folder below `dir`: the stores' temporary names (nothing else there starts with '.'). */
export function temporaryEntries(dir: string): string[] {
  const found: string[] = [];
  const visit = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (name.startsWith(".")) found.push(path);
      else if (lstatSync(path).isDirectory()) visit(path);
    }
  };
  if (existsSync(dir)) visit(dir);
  return found;
}

/** The files below `dir`, as paths relative to it. */
export function filesBelow(dir: string): string[] {
  const found: string[] = [];
  const visit = (d: string, rel: string) => {
    for (const name of readdirSync(d)) {
      if (lstatSync(join(d, name)).isDirectory()) visit(join(d, name), `${rel}${name}/`);
      else found.push(`${rel}${name}`);
    }
  };
  if (existsSync(dir)) visit(dir, "");
  return found.sort();
}

/**
 * Whether `r` is published whole (its rows and every file, byte for byte, in releases/) or not at
 * all (no rows, nothing in releases/); anything else is described, for the failure message.
 */
export async function publishedState(fleet: Fleet, data: string, r: StandIn): Promise<"published" | "absent" | string> {
  const { id, version } = r.manifest;
  const names = r.manifest.files.map((f) => f.name).sort();
  const recorded = await fleet.db.release(id, version);
  const rows = (await fleet.db.kysely.selectFrom("release_files").select("name").where("image", "=", id).where("version", "=", version).execute())
    .map((x) => x.name)
    .sort();
  const dir = join(data, "releases", id, version);
  const onDisk = filesBelow(dir);
  if (!recorded && !rows.length && !existsSync(dir)) return "absent";
  const sameBytes = onDisk.every((n) => r.files[n]?.equals(readFileSync(join(dir, n))));
  if (recorded && JSON.stringify(rows) === JSON.stringify(names) && JSON.stringify(onDisk) === JSON.stringify(names) && sameBytes) return "published";
  return `half-published: release row ${recorded ? "present" : "absent"}, file rows [${rows.join(", ")}], files in releases/ [${onDisk.join(", ")}]${sameBytes ? "" : " (bytes differ)"}`;
}
