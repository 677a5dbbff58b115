// One suite for every artifact store: a local directory and an S3-compatible bucket (s3rver, see
// tests/support/s3.ts), and what devices get from each through basalt serve.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { standInRelease, startTestServer } from "../../../tests/support/fleet-server.js";
import { type S3Server, startS3 } from "../../../tests/support/s3.js";
import { LocalArtifactStore } from "./local.js";
import { openArtifactStore } from "./open.js";
import { S3ArtifactStore } from "./s3.js";
import type { Artifact, ArtifactStore, FileEntry } from "./store.js";

const entry = (name: string, b: Buffer): FileEntry => ({ name, size: b.length, sha256: createHash("sha256").update(b).digest("hex") });

let s3: S3Server;
beforeAll(async () => {
  s3 = await startS3(["basalt", "other"]);
});
afterAll(() => s3?.stop());

let bucketPrefix = 0;
const stores: [string, () => Promise<ArtifactStore>][] = [
  ["a local directory", async () => new LocalArtifactStore(mkdtempSync(join(tmpdir(), "basalt-art-")))],
  // A fresh prefix per test: the bucket is shared.
  ["an S3 bucket", () => S3ArtifactStore.open({ url: `s3://basalt/t${++bucketPrefix}/`, endpoint: s3.endpoint, env: s3.env })],
];

/** The bytes a device gets for an artifact: read from disk, or fetched from the URL it is redirected to. */
async function fetchArtifact(a: Artifact | undefined, range?: string): Promise<Buffer> {
  if (!a) throw new Error("no artifact");
  if (a.kind === "file") {
    const b = readFileSync(a.path);
    const m = range ? /^bytes=(\d+)-(\d+)$/.exec(range) : null;
    return m ? b.subarray(Number(m[1]), Number(m[2]) + 1) : b;
  }
  const r = await fetch(a.url, range ? { headers: { range } } : {});
  expect(r.status).toBe(range ? 206 : 200);
  return Buffer.from(await r.arrayBuffer());
}

describe.each(stores)("artifacts in %s", (_name, open) => {
  it("keeps an upload out of sight until its commit, then serves it byte for byte", async () => {
    const store = await open();
    const big = randomBytes(3 * 1024 * 1024 + 17);
    const small = randomBytes(100);
    await store.stage("demo", "1.0", Readable.from([big.subarray(0, 1000), big.subarray(1000)]), entry("demo_1.0.efi", big));
    await store.stage("demo", "1.0", Readable.from([small]), entry("demo_1.0.root.raw.xz", small));
    expect(await store.stagedSize("demo", "1.0", "demo_1.0.efi")).toBe(big.length);
    expect(await store.has("demo", "1.0", "demo_1.0.efi")).toBe(false);
    await store.commit("demo", "1.0");
    expect(await store.has("demo", "1.0", "demo_1.0.efi")).toBe(true);
    expect(await store.has("demo", "1.0", "demo_1.0.root.raw.xz")).toBe(true);
    expect(await store.has("demo", "1.0", "demo_1.0.other")).toBe(false);
    const a = await store.locate("demo", "1.0", { name: "demo_1.0.efi", size: big.length });
    expect((await fetchArtifact(a)).equals(big)).toBe(true);
    expect((await fetchArtifact(a, "bytes=10-19")).equals(big.subarray(10, 20))).toBe(true);
    // A retried commit (the first did not get to record the release) is a no-op.
    await store.commit("demo", "1.0");
    expect(await store.has("demo", "1.0", "demo_1.0.efi")).toBe(true);
  });

  it("refuses a file that is not what the manifest says, and keeps none of it", async () => {
    const store = await open();
    const b = randomBytes(4096);
    const name = "demo_2.0.efi";
    const flipped = Buffer.from(b);
    flipped[2000] = (flipped[2000] ?? 0) ^ 1;
    await expect(store.stage("demo", "2.0", Readable.from([flipped]), entry(name, b))).rejects.toThrow(/^demo_2\.0\.efi: SHA-256 [0-9a-f]{64} does not match/);
    await expect(store.stage("demo", "2.0", Readable.from([b.subarray(0, 4000)]), entry(name, b))).rejects.toThrow(
      "demo_2.0.efi: 4000 bytes received, the release manifest says 4096",
    );
    await expect(store.stage("demo", "2.0", Readable.from([b, b]), entry(name, b))).rejects.toThrow("more than the 4096 bytes");
    expect(await store.stagedSize("demo", "2.0", name)).toBeUndefined();
    await store.stage("demo", "2.0", Readable.from([b]), entry(name, b));
    expect(await store.stagedSize("demo", "2.0", name)).toBe(4096);
  });

  it("drops an unfinished upload on discard", async () => {
    const store = await open();
    const b = randomBytes(50);
    await store.stage("demo", "3.0", Readable.from([b]), entry("demo_3.0.efi", b));
    await store.discard("demo", "3.0");
    expect(await store.stagedSize("demo", "3.0", "demo_3.0.efi")).toBeUndefined();
    await expect(store.commit("demo", "3.0")).rejects.toThrow();
    expect(await store.has("demo", "3.0", "demo_3.0.efi")).toBe(false);
  });

  it("refuses names that could leave the store's layout", async () => {
    const store = await open();
    const b = randomBytes(10);
    await expect(store.stage("../demo", "1.0", Readable.from([b]), entry("x.efi", b))).rejects.toThrow('invalid image id: "../demo"');
    await expect(store.stage("demo", "1.0", Readable.from([b]), entry("../x.efi", b))).rejects.toThrow();
    await expect(store.has("demo", "1/0", "x.efi")).rejects.toThrow('invalid version: "1/0"');
  });
});

describe("an S3 bucket", () => {
  it("redirects devices to presigned URLs that name the endpoint devices reach, not the server's", async () => {
    const store = await S3ArtifactStore.open({
      url: "s3://basalt/pub",
      endpoint: s3.endpoint,
      publicEndpoint: `http://localhost:${s3.port}`,
      expirySeconds: 600,
      env: s3.env,
    });
    const b = randomBytes(64);
    await store.stage("demo", "1.0", Readable.from([b]), entry("demo_1.0.efi", b));
    await store.commit("demo", "1.0");
    const a = await store.locate("demo", "1.0", { name: "demo_1.0.efi", size: 64 });
    if (a?.kind !== "url") throw new Error(`expected a URL, got ${JSON.stringify(a)}`);
    const u = new URL(a.url);
    expect(u.host).toBe(`localhost:${s3.port}`);
    expect(u.pathname).toBe("/basalt/pub/releases/demo/1.0/demo_1.0.efi");
    expect(u.searchParams.get("X-Amz-Expires")).toBe("600");
    expect(u.searchParams.get("X-Amz-Algorithm")).toBe("AWS4-HMAC-SHA256");
    expect((await fetchArtifact(a)).equals(b)).toBe(true);
  });

  it("says what is wrong at start-up: a missing bucket, missing credentials, a bad URL or endpoint", async () => {
    await expect(S3ArtifactStore.open({ url: "s3://nosuchbucket/x", endpoint: s3.endpoint, env: s3.env })).rejects.toThrow(
      "s3://nosuchbucket/x/: no such bucket (create it first; basalt serve does not)",
    );
    await expect(S3ArtifactStore.open({ url: "s3://basalt", endpoint: s3.endpoint, env: {} })).rejects.toThrow(
      "s3://basalt/: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
    );
    await expect(S3ArtifactStore.open({ url: "s3://Bad_Bucket", endpoint: s3.endpoint, env: s3.env })).rejects.toThrow("s3://Bad_Bucket: expected s3://BUCKET");
    await expect(S3ArtifactStore.open({ url: "s3://basalt", endpoint: "ftp://x", env: s3.env })).rejects.toThrow("ftp://x: expected http(s)://host[:port]");
    // Nothing listens there: the error names the bucket and what failed.
    await expect(S3ArtifactStore.open({ url: "s3://basalt", endpoint: "http://127.0.0.1:9", env: s3.env })).rejects.toThrow(
      /^reach s3:\/\/basalt\/: .*ECONNREFUSED/,
    );
  });

  it("keeps stores with different prefixes apart", async () => {
    const a = await S3ArtifactStore.open({ url: "s3://other/a", endpoint: s3.endpoint, env: s3.env });
    const b = await S3ArtifactStore.open({ url: "s3://other/b", endpoint: s3.endpoint, env: s3.env });
    const bytes = randomBytes(20);
    await a.stage("demo", "1.0", Readable.from([bytes]), entry("demo_1.0.efi", bytes));
    await a.commit("demo", "1.0");
    expect(await a.has("demo", "1.0", "demo_1.0.efi")).toBe(true);
    expect(await b.has("demo", "1.0", "demo_1.0.efi")).toBe(false);
  });
});

describe("basalt serve with release files elsewhere", () => {
  /** Publishes a stand-in release and asks for its UKI as a device on the channel would. */
  async function deviceDownload(server: Awaited<ReturnType<typeof startTestServer>>) {
    await server.publish("demo", "stable", "1.0");
    const m = await server.fleet.db.release("demo", "1.0");
    const uki = m?.files.find((f) => f.name.endsWith(".efi"));
    if (!uki) throw new Error("no UKI in the release");
    const r = await fetch(`${server.url}/v1/stable/demo/x86-64/${"ab".repeat(16)}/0.9/${uki.name}`, { redirect: "manual" });
    return { r, uki };
  }

  it("redirects a device's download to the bucket and records it; the bucket serves the committed bytes", async () => {
    const server = await startTestServer({ artifacts: { artifacts: "s3://basalt/served", s3: { endpoint: s3.endpoint, env: s3.env } } });
    try {
      const { r, uki } = await deviceDownload(server);
      expect(r.status).toBe(302);
      const location = r.headers.get("location") ?? "";
      expect(location).toContain(`${s3.endpoint}/basalt/served/releases/demo/1.0/${uki.name}?`);
      const bytes = Buffer.from(await (await fetch(location)).arrayBuffer());
      expect(createHash("sha256").update(bytes).digest("hex")).toBe(uki.sha256);
      expect((await server.fleet.db.device("demo", "ab".repeat(16)))?.downloadedVersion).toBe("1.0");
      // A file that is not offered is refused by the server, not redirected.
      const { manifest, files } = standInRelease("demo", "2.0");
      await server.fleet.beginRelease(manifest);
      for (const [name, b] of Object.entries(files)) await server.fleet.putFile("demo", "2.0", name, Readable.from([b]));
      await server.fleet.commitRelease("demo", "2.0", "test");
      const hidden = await fetch(`${server.url}/v1/stable/demo/x86-64/${"ab".repeat(16)}/0.9/demo_2.0.efi`, { redirect: "manual" });
      expect(hidden.status).toBe(404);
    } finally {
      await server.close();
    }
  });

  it("sends devices to a CDN base URL in front of the store, in the store's layout", async () => {
    const server = await startTestServer({ artifacts: { downloadUrl: "https://cdn.example.net/fleet/" } });
    try {
      const { r, uki } = await deviceDownload(server);
      expect(r.status).toBe(302);
      expect(r.headers.get("location")).toBe(`https://cdn.example.net/fleet/releases/demo/1.0/${uki.name}`);
    } finally {
      await server.close();
    }
  });

  it("refuses a download URL that is not http(s)", async () => {
    await expect(openArtifactStore({ artifacts: mkdtempSync(join(tmpdir(), "basalt-art-")), downloadUrl: "file:///srv" })).rejects.toThrow(
      "file:///srv: expected an http or https URL",
    );
  });
});
