// A basalt serve in the test process, on a temporary data directory and with no key, with small
// stand-in releases published through the same Fleet calls the API uses; their indexes are signed
// as `basalt release` signs them, with a test update key. Shared by the fleet tests, the browser
// test and the load benchmark.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { FastifyInstance } from "fastify";
import { parseArtifactName } from "../../src/contract/artifacts.js";
import { RELEASE_FORMAT, type ReleaseFile, type ReleaseManifest } from "../../src/contract/release-manifest.js";
import type { ArtifactOptions } from "../../src/fleet/artifacts/open.js";
import type { Fleet, RolloutOptions } from "../../src/fleet/fleet.js";
import { ensureUpdateKey, type UpdateKeyPaths } from "../../src/keys/update-key.js";
import { signReleaseIndexes } from "../../src/release/indexes.js";
import { type Credentials, deviceToken } from "../../src/server/auth.js";
import { createServer, openFleet, type ServerOptions } from "../../src/server/server.js";

export const OPERATOR_TOKEN = "test-operator-token-0123456789";

export interface TestServer {
  app: FastifyInstance;
  fleet: Fleet;
  url: string;
  /** The data directory: release files (unless in a bucket) and the SQLite database. */
  data: string;
  secret: Buffer;
  /** The key the stand-in releases are signed with; the server never sees it. */
  key: UpdateKeyPaths;
  /** Uploads and commits a stand-in release of `image` `version` (a UKI and a root partition). */
  release(image: string, version: string): Promise<ReleaseManifest>;
  /** Releases (if needed) and offers `version` on `channel`. */
  publish(image: string, channel: string, version: string, rollout?: RolloutOptions): Promise<void>;
  tokenFor(image: string, machine: string): string;
  close(): Promise<void>;
}

let sharedKey: Promise<UpdateKeyPaths> | undefined;

/** The update key stand-in releases are signed with (made once per process). */
export function testUpdateKey(): Promise<UpdateKeyPaths> {
  sharedKey ??= ensureUpdateKey(mkdtempSync(join(tmpdir(), "basalt-testkey-")), "test");
  return sharedKey;
}

export async function startTestServer(
  options: {
    database?: string;
    /** Release files elsewhere than the data directory (a bucket), or downloads from a CDN. */
    artifacts?: Partial<ArtifactOptions>;
    /** Who may sign in or report besides the operator token (OPERATOR_TOKEN). */
    auth?: Partial<Credentials>;
    /** Credentials that change while the server runs (instead of `auth`). */
    credentials?: () => Credentials;
    /** More createServer options (timeouts, TLS, proxies, rate limits). */
    server?: Partial<Omit<ServerOptions, "fleet" | "auth">>;
    now?: () => number;
    listen?: boolean;
    logger?: boolean | object;
  } = {},
): Promise<TestServer> {
  const key = await testUpdateKey();
  const data = mkdtempSync(join(tmpdir(), "basalt-fleet-"));
  const fleet = await openFleet({
    data,
    ...(options.database ? { database: options.database } : {}),
    ...options.artifacts,
    ...(options.now ? { now: options.now } : {}),
  });
  const secret = randomBytes(32);
  const app = createServer({
    fleet,
    auth: { secret, credentials: options.credentials ?? { token: OPERATOR_TOKEN, operators: [], ...options.auth } },
    logger: options.logger ?? false,
    // Simulated fleets come from one address: no per-address limit unless a test sets one.
    deviceRateLimit: 0,
    ...options.server,
  });
  const url = options.listen === false ? "" : await app.listen({ host: "127.0.0.1", port: 0 });
  const released = new Set<string>();
  const release = async (image: string, version: string) => {
    const { manifest: m, files } = await standInRelease(image, version);
    await fleet.beginRelease(m);
    for (const [name, b] of Object.entries(files)) await fleet.putFile(image, version, name, Readable.from([b]));
    await fleet.commitRelease(image, version, "test");
    released.add(`${image} ${version}`);
    return m;
  };
  return {
    app,
    fleet,
    url,
    data,
    secret,
    key,
    release,
    async publish(image, channel, version, rollout) {
      if (!released.has(`${image} ${version}`)) await release(image, version);
      await fleet.promote(image, channel, version, "test", rollout);
    },
    tokenFor: (image, machine) => deviceToken(secret, image, machine),
    async close() {
      await app.close();
      await fleet.db.close();
    },
  };
}

/** The release.json `basalt release` would write for a release listing `files`, signed with `key` (the test key by default). */
export async function signedManifest(image: string, version: string, files: ReleaseFile[], key?: UpdateKeyPaths): Promise<ReleaseManifest> {
  const signed = await signReleaseIndexes(files, key ?? (await testUpdateKey()));
  return {
    format: RELEASE_FORMAT,
    id: image,
    version,
    devSigned: false,
    roothash: "ab".repeat(32),
    signingKey: signed.signingKey,
    publicKey: signed.publicKey,
    createdAt: new Date().toISOString(),
    files,
    indexes: signed.indexes,
  };
}

/** The release.json of a release made of `files`. */
export function manifestFor(image: string, version: string, files: Record<string, Buffer>, key?: UpdateKeyPaths): Promise<ReleaseManifest> {
  const entries = Object.entries(files).map(([name, b]) => ({
    name,
    kind: parseArtifactName(name)?.kind ?? "root",
    size: b.length,
    sha256: createHash("sha256").update(b).digest("hex"),
    installedSize: b.length,
  }));
  return signedManifest(image, version, entries, key);
}

/** A release's manifest and bytes: a small UKI and root partition, random, so every release differs. */
export async function standInRelease(
  image: string,
  version: string,
  sizes = { uki: 2048, root: 4096 },
): Promise<{ manifest: ReleaseManifest; files: Record<string, Buffer> }> {
  const files: Record<string, Buffer> = {
    [`${image}_${version}.efi`]: randomBytes(sizes.uki),
    [`${image}_${version}.root-x86-64.${randomUUIDLike()}.raw.xz`]: randomBytes(sizes.root),
  };
  return { manifest: await manifestFor(image, version, files), files };
}

function randomUUIDLike(): string {
  const h = randomBytes(16).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
