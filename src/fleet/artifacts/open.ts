// Which store `basalt serve` uses: a directory (default: the data directory) or s3://…, and
// optionally a CDN base URL devices download from.
import { UserError } from "../../errors.js";
import { LocalArtifactStore } from "./local.js";
import { S3ArtifactStore, type S3Options } from "./s3.js";
import { type ArtifactStore, redirecting } from "./store.js";

export interface ArtifactOptions {
  /** A directory or s3://BUCKET/PREFIX. */
  artifacts: string;
  s3?: Omit<S3Options, "url">;
  /** Devices download committed files from here (a CDN or public bucket fronting the store). */
  downloadUrl?: string;
}

/** Opens the store and removes what killed processes left in it (see ArtifactStore.recover). */
export async function openArtifactStore(o: ArtifactOptions): Promise<ArtifactStore> {
  const store = o.artifacts.startsWith("s3://") ? await S3ArtifactStore.open({ ...o.s3, url: o.artifacts }) : new LocalArtifactStore(o.artifacts);
  await store.recover();
  if (!o.downloadUrl) return store;
  let base: URL;
  try {
    base = new URL(o.downloadUrl);
  } catch {
    throw new UserError(`${o.downloadUrl}: not a URL (expected http(s)://host/path)`);
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") throw new UserError(`${o.downloadUrl}: expected an http or https URL`);
  return redirecting(store, base.href);
}
