// What the update scenarios share: a basalt serve on the host port the fixture's update.url names,
// never given a key (it serves the indexes each release was signed with), releasing and publishing a
// built version to it, a release an intruder signed with a key of its own, faults a hostile mirror
// or network would inject (flipped bytes, damaged signatures, a slow link), and the device-side
// facts they check.
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Transform } from "node:stream";
import type { FastifyInstance } from "fastify";
import { buildManifestSchema } from "../../../src/contract/build-manifest.js";
import { type ReleaseManifest, releaseManifestSchema } from "../../../src/contract/release-manifest.js";
import type { Fleet, RolloutOptions } from "../../../src/fleet/fleet.js";
import { keysDir } from "../../../src/keys/keys.js";
import { ensureUpdateKey, fingerprint, updateKeyPaths } from "../../../src/keys/update-key.js";
import { signReleaseIndexes, writeIndexFiles } from "../../../src/release/indexes.js";
import { releasesDir } from "../../../src/release/layout.js";
import { createRelease } from "../../../src/release/release.js";
import { createReporter } from "../../../src/report/reporter.js";
import { deviceToken } from "../../../src/server/auth.js";
import { publishRelease, publishReleaseDir } from "../../../src/server/publish.js";
import { createServer, openFleet } from "../../../src/server/server.js";
import type { SshSession } from "../../../src/vm/ssh.js";
import { startS3 } from "../../support/s3.js";
import { type BuiltImage, prepareVersion, whileAlone, workDir } from "./image.js";
import { type Scenario, sh } from "./scenario.js";

/**
 * v2 of the shared image, built once per run for every update scenario. It gives the versions it
 * installs two boot tries instead of the default three: enough to see the counter go down before a
 * fallback, and one reboot (over a minute under TCG) less.
 */
export const prepareV2 = (shared: BuiltImage) => prepareVersion(shared, "update-v2", "2.0", "[boot]\ntries = 2\n");

/** Baked into the fixture's update.url as http://10.0.2.2:18480/ (the host, seen from the guest). */
export const UPDATE_PORT = 18480;
export const OPERATOR_TOKEN = "e2e-operator-token-0123456789";
const reporter = createReporter({ live: false, quiet: true });

/** What the server does wrong on purpose; each field applies to device requests whose file name matches. */
export interface Faults {
  /** Flip one byte in the middle of these files (same length, so only the hash can tell). */
  corrupt?: RegExp;
  /** Serve this instead of SHA256SUMS.gpg (a damaged signature). */
  signature?: Buffer;
  /** Send these files slowly; `onBytes` sees the running total of bytes sent. */
  throttle?: { match: RegExp; bytesPerSecond: number; onBytes?: (sent: number) => void };
}

export interface UpdateServer {
  app: FastifyInstance;
  fleet: Fleet;
  url: string;
  faults: Faults;
  /** Bytes of release files (not indexes) sent to devices since the last reset. */
  downloaded: { bytes: number; files: string[] };
  /** The report token a device with this machine-id is provisioned with. */
  tokenFor(image: string, machine: string): string;
  close(): Promise<void>;
}

function flipMiddleByte(size: number): Transform {
  const at = Math.floor(size / 2);
  let pos = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (at >= pos && at < pos + chunk.length) {
        const copy = Buffer.from(chunk);
        copy[at - pos] = (copy[at - pos] ?? 0) ^ 0xff;
        chunk = copy;
      }
      pos += chunk.length;
      done(null, chunk);
    },
  });
}

function throttled(bytesPerSecond: number, onBytes?: (sent: number) => void): Transform {
  let sent = 0;
  return new Transform({
    highWaterMark: 64 * 1024,
    transform(chunk: Buffer, _enc, done) {
      sent += chunk.length;
      onBytes?.(sent);
      setTimeout(() => done(null, chunk), (chunk.length / bytesPerSecond) * 1000);
    },
  });
}

export interface UpdateServerOptions {
  /** Keep release files in an S3-compatible bucket; devices are redirected to it (at the host, 10.0.2.2). */
  bucket?: boolean;
}

/** Starts basalt serve on UPDATE_PORT, with an empty data directory and no key. */
export async function startUpdateServer(options: UpdateServerOptions = {}): Promise<UpdateServer> {
  const data = join(workDir(), "server");
  rmSync(data, { recursive: true, force: true });
  mkdirSync(data, { recursive: true });
  const s3 = options.bucket ? await startS3() : undefined;
  const fleet = await openFleet({
    data,
    ...(s3 ? { artifacts: "s3://basalt/e2e", s3: { endpoint: s3.endpoint, publicEndpoint: `http://10.0.2.2:${s3.port}`, env: s3.env } } : {}),
  });
  const secret = randomBytes(32);
  const app = createServer({ fleet, auth: { secret, credentials: { token: OPERATOR_TOKEN, operators: [] } } });
  const faults: Faults = {};
  const downloaded = { bytes: 0, files: [] as string[] };
  app.addHook("onSend", async (req, reply, payload) => {
    const file = /^\/v1\/[^?]*\/([^/?]+)$/.exec(req.url)?.[1];
    if (!file || reply.statusCode >= 300) return payload;
    if (file === "SHA256SUMS.gpg" && faults.signature) return faults.signature;
    if (file.startsWith("SHA256SUMS")) return payload;
    if (req.method === "GET") {
      downloaded.files.push(file);
      downloaded.bytes += Number(reply.getHeader("content-length") ?? 0);
    }
    let out = payload as NodeJS.ReadableStream;
    if (faults.corrupt?.test(file)) out = out.pipe(flipMiddleByte(Number(reply.getHeader("content-length"))));
    const t = faults.throttle;
    if (t?.match.test(file)) out = out.pipe(throttled(t.bytesPerSecond, t.onBytes));
    return out;
  });
  await app.listen({ host: "127.0.0.1", port: UPDATE_PORT });
  // Once, whoever asks first: a scenario may stop a server before its deferred clean-up does.
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      await app.close();
      await fleet.db.close();
      await s3?.stop();
    })());
  return {
    app,
    fleet,
    url: `http://127.0.0.1:${UPDATE_PORT}`,
    faults,
    downloaded,
    tokenFor: (image, machine) => deviceToken(secret, image, machine),
    close,
  };
}

interface OfferOptions {
  channel?: string;
  rollout?: RolloutOptions;
  /** `image` is released already (by an earlier step): publish that release. */
  released?: boolean;
}

/**
 * A step: basalt serve (with no key), with `image` released and published on it; the scenario
 * closes the server when it ends.
 */
export function serveRelease(s: Scenario, image: BuiltImage, options: OfferOptions & UpdateServerOptions = {}): Promise<UpdateServer> {
  const how = `${options.rollout?.percent !== undefined ? ` at ${options.rollout.percent}%` : ""}${options.bucket ? ", files in an S3 bucket" : ""}`;
  return s.step(`start basalt serve and publish ${image.version} on stable${how}`, async () => {
    const server = await startUpdateServer(options);
    s.defer(() => server.close());
    await releaseAndPublish(server, image, options);
    return server;
  });
}

/**
 * basalt release (dev keys allowed: the suite's keys are made on the fly), once per build: a
 * release made from the same build (same root hash, signed with the same key set) is reused, as the
 * image is (xz of the root takes a minute or more here).
 */
function releaseOnce(image: BuiltImage): Promise<void> {
  const release = join(releasesDir(image.dir), image.version, "release.json");
  const build = join(image.dir, "out", image.version, "manifest.json");
  return whileAlone(join(image.dir, "out", `release-${image.version}`), async () => {
    if (existsSync(release) && existsSync(build)) {
      const made = releaseManifestSchema.safeParse(JSON.parse(readFileSync(release, "utf8")));
      const built = buildManifestSchema.safeParse(JSON.parse(readFileSync(build, "utf8")));
      const sameKey = made.success && made.data.signingKey === (await fingerprint(updateKeyPaths(keysDir(image.dir))));
      if (made.success && built.success && made.data.roothash === built.data.roothash && sameKey) return;
    }
    await createRelease(image.dir, { reporter, allowDev: true });
  });
}

const publishOptions = (server: UpdateServer, options: OfferOptions) => ({
  server: server.url,
  token: OPERATOR_TOKEN,
  channel: options.channel ?? "stable",
  ...(options.rollout ? { rollout: options.rollout } : {}),
  reporter,
});

/** The image's release, made once per build, and basalt publish. */
export async function releaseAndPublish(server: UpdateServer, image: BuiltImage, options: OfferOptions = {}): Promise<void> {
  if (!options.released) await releaseOnce(image);
  await publishRelease(image.dir, publishOptions(server, options));
}

/**
 * `image`'s release (made first) as an intruder would publish it: the same files, but both indexes
 * signed with a fresh update key of its own, which its release.json carries as every release
 * carries its key. A server with no key cannot tell it from the real one; a device's keyring can.
 */
export async function publishIntruderRelease(server: UpdateServer, image: BuiltImage, options: OfferOptions = {}): Promise<void> {
  await releaseOnce(image);
  const real = join(releasesDir(image.dir), image.version);
  const manifest = JSON.parse(readFileSync(join(real, "release.json"), "utf8")) as ReleaseManifest;
  const dir = join(workDir(), `intruder-${image.version}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of manifest.files) {
    try {
      linkSync(join(real, f.name), join(dir, f.name));
    } catch {
      copyFileSync(join(real, f.name), join(dir, f.name));
    }
  }
  const signed = await signReleaseIndexes(manifest.files, await ensureUpdateKey(mkdtempSync(join(tmpdir(), "basalt-intruder-")), "intruder"));
  writeIndexFiles(dir, signed.indexes);
  const forged: ReleaseManifest = { ...manifest, signingKey: signed.signingKey, publicKey: signed.publicKey, indexes: signed.indexes };
  writeFileSync(join(dir, "release.json"), `${JSON.stringify(forged, null, 2)}\n`);
  await publishReleaseDir(dir, publishOptions(server, options));
}

export const imageVersion = (ssh: SshSession) => sh(ssh, ". /etc/os-release; echo $IMAGE_VERSION");
export const ukis = async (ssh: SshSession) => (await sh(ssh, "sudo -n ls /boot/EFI/Linux")).split("\n").sort();
export const SYSUPDATE = "sudo -n /usr/lib/systemd/systemd-sysupdate";
/**
 * `systemd-sysupdate update` in the guest: it downloads and decompresses a root of about 1 GB, 90 s
 * under TCG on an idle machine and more than twice that on a busy one.
 */
export const sysupdateUpdate = (ssh: SshSession) => sh(ssh, `${SYSUPDATE} update`, 600_000);
