// Release files in an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph RGW, …), for replicas that
// share no disk. Uploads stream through the server into `incoming/`; a commit copies them inside the
// bucket to `releases/` (never read by devices before then, so no cache in front can hold a file a
// later upload replaces). Devices are redirected to a presigned GET of the committed file: the
// bytes never pass through the server, and the signature needs no round trip to the bucket.
// Credentials come from the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN)
// environment, never from the command line.
// A put is atomic in S3 (an object appears whole or not at all), so the only leftovers of a killed
// server are unfinished multipart uploads (files above the client's 64 MiB part size): recover()
// aborts those under incoming/ that were started more than an hour ago. A bucket lifecycle rule
// (AbortIncompleteMultipartUpload) does the same where recover() cannot list them.
import { Client, type ClientOptions, CopyDestinationOptions, CopySourceOptions } from "minio";
import { UserError } from "../../errors.js";
import { type Artifact, type ArtifactStore, type FileEntry, releaseKey, releasePrefix, STALE_AFTER_MS, verifying } from "./store.js";

export interface S3Options {
  /** s3://bucket/optional/prefix */
  url: string;
  /** The S3 API endpoint; default AWS (s3.<region>.amazonaws.com). */
  endpoint?: string;
  /** The endpoint devices reach the bucket at, when it differs from the server's (a private address): presigned URLs name it. */
  publicEndpoint?: string;
  region?: string;
  /** How long a redirect stays valid; a download started before it runs out completes. */
  expirySeconds?: number;
  env?: NodeJS.ProcessEnv;
}

// One part in S3's single-request copy; larger files are copied in parts.
const SINGLE_COPY_MAX = 5 * 1024 ** 3;

export function parseS3Url(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m?.[1]) throw new UserError(`${url}: expected s3://BUCKET or s3://BUCKET/PREFIX (a lowercase bucket name of 3 to 63 characters)`);
  const prefix = (m[2] ?? "").replace(/^\/+|\/+$/g, "");
  return { bucket: m[1], prefix: prefix ? `${prefix}/` : "" };
}

function clientOptions(endpoint: string | undefined, region: string, env: NodeJS.ProcessEnv, what: string): ClientOptions {
  const accessKey = env.AWS_ACCESS_KEY_ID;
  const secretKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKey || !secretKey) throw new UserError(`${what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment`);
  const base = { accessKey, secretKey, region, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) };
  if (!endpoint) return { ...base, endPoint: "s3.amazonaws.com", useSSL: true };
  let u: URL;
  try {
    u = new URL(endpoint);
  } catch {
    throw new UserError(`${endpoint}: not an endpoint URL (expected http(s)://host[:port])`);
  }
  if ((u.protocol !== "http:" && u.protocol !== "https:") || (u.pathname !== "/" && u.pathname !== "")) {
    throw new UserError(`${endpoint}: expected http(s)://host[:port], with no path`);
  }
  const useSSL = u.protocol === "https:";
  // MinIO, Garage and Ceph answer on one host name: path-style addressing.
  return { ...base, endPoint: u.hostname.replace(/^\[|\]$/g, ""), port: Number(u.port || (useSSL ? 443 : 80)), useSSL, pathStyle: true };
}

export class S3ArtifactStore implements ArtifactStore {
  readonly where: string;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly client: Client;
  private readonly presigner: Client;
  private readonly expiry: number;

  private constructor(o: S3Options) {
    const { bucket, prefix } = parseS3Url(o.url);
    const env = o.env ?? process.env;
    const region = o.region ?? env.AWS_REGION ?? "us-east-1";
    this.bucket = bucket;
    this.prefix = prefix;
    this.where = `s3://${bucket}/${prefix}`;
    this.client = new Client(clientOptions(o.endpoint, region, env, this.where));
    this.presigner = o.publicEndpoint ? new Client(clientOptions(o.publicEndpoint, region, env, this.where)) : this.client;
    this.expiry = o.expirySeconds ?? 3600;
  }

  /** Connects and checks that the bucket is there, so a wrong name or key fails at start-up, not on the first upload. */
  static async open(o: S3Options): Promise<S3ArtifactStore> {
    const store = new S3ArtifactStore(o);
    const exists = await store.call("reach", "", () => store.client.bucketExists(store.bucket));
    if (!exists) throw new UserError(`${store.where}: no such bucket (create it first; basalt serve does not)`);
    return store;
  }

  /** Runs one S3 request; its failure names the object and what the store said. */
  private async call<T>(what: string, key: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      if (e instanceof UserError) throw e;
      const err = e as { code?: string; message?: string };
      throw new Error(`${what} s3://${this.bucket}/${key}: ${err.code ?? ""}${err.code && err.message ? ": " : ""}${err.message ?? String(e)}`);
    }
  }

  /** A release's folder in the bucket, with its trailing slash (for listing). */
  private folder(id: string, version: string, area: "releases" | "incoming"): string {
    return `${this.prefix}${releasePrefix(id, version, area)}/`;
  }

  private size(key: string): Promise<number | undefined> {
    return this.call("stat", key, () =>
      this.client.statObject(this.bucket, key).then(
        (stat) => stat.size,
        (e: { code?: string }) => {
          if (e.code === "NotFound" || e.code === "NoSuchKey") return undefined;
          throw e;
        },
      ),
    );
  }

  /** The objects below a prefix, with the sizes the listing gives (no request per object). */
  private async list(prefix: string): Promise<{ key: string; size: number }[]> {
    return this.call("list", prefix, async () => {
      const objects: { key: string; size: number }[] = [];
      for await (const o of this.client.listObjectsV2(this.bucket, prefix, true)) if (o.name) objects.push({ key: o.name, size: o.size });
      return objects;
    });
  }

  async stage(id: string, version: string, body: NodeJS.ReadableStream, expected: FileEntry): Promise<void> {
    const key = this.prefix + releaseKey(id, version, expected.name, "incoming");
    const check = verifying(expected);
    body.on("error", (e) => check.destroy(e));
    try {
      await this.call("upload", key, () => this.client.putObject(this.bucket, key, body.pipe(check), expected.size));
      check.check();
    } catch (e) {
      // A multipart upload that failed part-way stays in the bucket (and the client would resume it later).
      await this.abortUploads(key, 0, (k) => k === key).catch(() => undefined);
      await this.client.removeObject(this.bucket, key).catch(() => undefined);
      throw e;
    }
  }

  async stagedSize(id: string, version: string, name: string): Promise<number | undefined> {
    return this.size(this.prefix + releaseKey(id, version, name, "incoming"));
  }

  async committedSize(id: string, version: string, name: string): Promise<number | undefined> {
    return this.size(this.prefix + releaseKey(id, version, name));
  }

  async commit(id: string, version: string): Promise<void> {
    const incoming = this.folder(id, version, "incoming");
    const final = this.folder(id, version, "releases");
    const staged = await this.list(incoming);
    // A commit that copied the files but did not get to record the release is finished by a retry.
    if (!staged.length) {
      if ((await this.list(final)).length) return;
      throw new UserError(`${id} ${version}: nothing uploaded`);
    }
    // Copies first, then removals: a commit stopped part-way leaves every file in one place or the
    // other (or both), and repeating it finishes it.
    await this.move(staged, incoming, final);
  }

  async uncommit(id: string, version: string): Promise<void> {
    const final = this.folder(id, version, "releases");
    await this.move(await this.list(final), final, this.folder(id, version, "incoming"));
  }

  private async move(objects: { key: string; size: number }[], from: string, to: string): Promise<void> {
    for (const { key, size } of objects) {
      const target = to + key.slice(from.length);
      const source = new CopySourceOptions({ Bucket: this.bucket, Object: key });
      const dest = new CopyDestinationOptions({ Bucket: this.bucket, Object: target });
      await this.call("copy", target, () => (size <= SINGLE_COPY_MAX ? this.client.copyObject(source, dest) : this.client.composeObject(dest, [source])));
    }
    await this.remove(objects);
  }

  async discard(id: string, version: string): Promise<void> {
    // The upload first, so that a commit running at the same moment cannot copy it after releases/ is cleared.
    const incoming = this.folder(id, version, "incoming");
    await this.remove(await this.list(incoming));
    await this.abortUploads(incoming, 0);
    await this.remove(await this.list(this.folder(id, version, "releases")));
  }

  async recover(): Promise<string[]> {
    return this.abortUploads(`${this.prefix}incoming/`, STALE_AFTER_MS);
  }

  /**
   * Aborts the unfinished multipart uploads below `prefix` started more than `olderThanMs` ago (and
   * whose key `match` accepts); returns their keys. Stops, without failing, where the server cannot
   * list them (s3rver) or the credentials may not (ListBucketMultipartUploads, AbortMultipartUpload):
   * a bucket lifecycle rule is the way to clean up there.
   */
  private async abortUploads(prefix: string, olderThanMs: number, match: (key: string) => boolean = () => true): Promise<string[]> {
    const aborted: string[] = [];
    const unsupported = (e: { code?: string }) => e.code === "NotImplemented" || e.code === "AccessDenied";
    let keyMarker = "";
    let uploadIdMarker = "";
    for (;;) {
      const page = await this.call("list uploads", prefix, () =>
        this.client.listIncompleteUploadsQuery(this.bucket, prefix, keyMarker, uploadIdMarker, "").catch((e: { code?: string }) => {
          if (unsupported(e)) return undefined;
          throw e;
        }),
      );
      if (!page) return aborted;
      for (const u of page.uploads) {
        if (!match(u.key) || Date.now() - u.initiated.getTime() < olderThanMs) continue;
        const done = await this.call("abort upload", u.key, () =>
          this.client.abortMultipartUpload(this.bucket, u.key, u.uploadId).then(
            () => true,
            (e: { code?: string }) => {
              if (unsupported(e)) return false;
              throw e;
            },
          ),
        );
        if (!done) return aborted;
        aborted.push(u.key);
      }
      if (!page.isTruncated) return aborted;
      keyMarker = page.nextKeyMarker;
      uploadIdMarker = page.nextUploadIdMarker;
    }
  }

  /** One request per object: a release has a handful, and not every S3-compatible server gets a multi-object delete right. */
  private async remove(objects: { key: string }[]): Promise<void> {
    for (const { key } of objects) await this.call("remove", key, () => this.client.removeObject(this.bucket, key));
  }

  async has(id: string, version: string, name: string): Promise<boolean> {
    return (await this.size(this.prefix + releaseKey(id, version, name))) !== undefined;
  }

  async locate(id: string, version: string, file: Pick<FileEntry, "name" | "size">): Promise<Artifact | undefined> {
    const key = this.prefix + releaseKey(id, version, file.name);
    const url = await this.call("presign", key, () => this.presigner.presignedGetObject(this.bucket, key, this.expiry));
    return { kind: "url", url, size: file.size };
  }
}
