// One suite for every artifact store: a local directory and an S3-compatible bucket (s3rver, see
// tests/support/s3.ts), and what devices get from each through basalt serve.
import { spawnSync } from "node:child_process";
import { createHash, pbkdf2, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { Client } from "minio";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { standInRelease, startTestServer } from "../../../tests/support/fleet-server.js";
import { type S3Server, startS3 } from "../../../tests/support/s3.js";
import { SimulatedDevice } from "../../../tests/support/simulated-device.js";
import { LocalArtifactStore, temporaryName } from "./local.js";
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

  it("takes back a commit the database did not record, and commits it again", async () => {
    const store = await open();
    const b = randomBytes(300);
    await store.stage("demo", "4.0", Readable.from([b]), entry("demo_4.0.efi", b));
    await store.commit("demo", "4.0");
    expect(await store.committedSize("demo", "4.0", "demo_4.0.efi")).toBe(300);
    expect(await store.stagedSize("demo", "4.0", "demo_4.0.efi")).toBeUndefined();
    await store.uncommit("demo", "4.0");
    expect(await store.has("demo", "4.0", "demo_4.0.efi")).toBe(false);
    expect(await store.committedSize("demo", "4.0", "demo_4.0.efi")).toBeUndefined();
    expect(await store.stagedSize("demo", "4.0", "demo_4.0.efi")).toBe(300);
    // Nothing committed: nothing to take back.
    await store.uncommit("demo", "4.0");
    await store.commit("demo", "4.0");
    expect((await fetchArtifact(await store.locate("demo", "4.0", { name: "demo_4.0.efi", size: 300 }))).equals(b)).toBe(true);
  });

  it("discards the files of a commit the database did not record along with the upload", async () => {
    const store = await open();
    const a = randomBytes(30);
    const b = randomBytes(40);
    await store.stage("demo", "5.0", Readable.from([a]), entry("demo_5.0.efi", a));
    await store.commit("demo", "5.0");
    await store.stage("demo", "5.0", Readable.from([b]), entry("demo_5.0.root.raw.xz", b));
    await store.discard("demo", "5.0");
    expect(await store.has("demo", "5.0", "demo_5.0.efi")).toBe(false);
    expect(await store.stagedSize("demo", "5.0", "demo_5.0.root.raw.xz")).toBeUndefined();
    // The same release uploaded again commits as if it were the first time.
    await store.stage("demo", "5.0", Readable.from([a]), entry("demo_5.0.efi", a));
    await store.commit("demo", "5.0");
    expect(await store.committedSize("demo", "5.0", "demo_5.0.efi")).toBe(30);
    expect(await store.committedSize("demo", "5.0", "demo_5.0.root.raw.xz")).toBeUndefined();
  });

  it("leaves nothing of an upload that fails at once (a client that disconnects, a first chunk over the size)", async () => {
    const store = await open();
    const b = randomBytes(4096);
    // libuv's threads busy (as under load): a file stream's open, which runs there, comes only after
    // the upload failed and was cleaned up, as it did now and then in production.
    const busy = Array.from(
      { length: Number(process.env.UV_THREADPOOL_SIZE ?? 4) },
      () => new Promise((resolve) => pbkdf2("x", "y", 300_000, 32, "sha256", resolve)),
    );
    const disconnected = new Readable({
      read() {
        this.destroy(Object.assign(new Error("aborted"), { code: "ECONNRESET" }));
      },
    });
    await expect(store.stage("demo", "6.0", disconnected, entry("demo_6.0.efi", b))).rejects.toThrow("aborted");
    await expect(store.stage("demo", "6.0", Readable.from([b]), entry("demo_6.0.efi", b.subarray(0, 100)))).rejects.toThrow("more than the 100 bytes");
    expect(await store.stagedSize("demo", "6.0", "demo_6.0.efi")).toBeUndefined();
    await Promise.all(busy);
    await new Promise((r) => setTimeout(r, 100));
    if (store instanceof LocalArtifactStore) expect(readdirSync(join(store.root, "incoming/demo/6.0"))).toEqual([]);
  });

  it("refuses names that could leave the store's layout", async () => {
    const store = await open();
    const b = randomBytes(10);
    await expect(store.stage("../demo", "1.0", Readable.from([b]), entry("x.efi", b))).rejects.toThrow('invalid image id: "../demo"');
    await expect(store.stage("demo", "1.0", Readable.from([b]), entry("../x.efi", b))).rejects.toThrow();
    await expect(store.has("demo", "1/0", "x.efi")).rejects.toThrow('invalid version: "1/0"');
  });
});

describe("a local directory", () => {
  const deadPid = () => {
    const r = spawnSync("true");
    if (!r.pid) throw new Error("could not start true");
    return r.pid;
  };

  it("recovers from killed writers at start-up: their temporary files go, a live writer's stay", async () => {
    const root = mkdtempSync(join(tmpdir(), "basalt-art-"));
    const dir = join(root, "incoming/demo/1.0");
    mkdirSync(dir, { recursive: true });
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    const file = (name: string, old = false) => {
      writeFileSync(join(dir, name), "partial");
      if (old) utimesSync(join(dir, name), twoHoursAgo, twoHoursAgo);
      return name;
    };
    const gone = [
      file(temporaryName({ pid: deadPid() })),
      // This pid, an earlier process (a restarted container has pid 1 again).
      file(temporaryName({ instance: "00000000" })),
      file(temporaryName({ host: "other-replica", pid: 1 }), true),
      // An older server's temporary name, not written to for two hours.
      file(".demo_1.0.efi.4b2d8c1e-13a5-4a4b-9b47-0c2f3e0f6d11", true),
    ];
    const kept = [
      file(temporaryName()),
      file(temporaryName({ pid: process.ppid })),
      // Another replica sharing the directory may still be writing it.
      file(temporaryName({ host: "other-replica", pid: 1 })),
      file(".demo_1.0.efi.8f0b3a2e-47c6-4f0e-a1d2-5e6f7a8b9c0d"),
      // Uploaded files are not temporary, however old.
      file("demo_1.0.efi", true),
    ];
    // A discard killed between its rename and its removal.
    const trash = join(root, "incoming", temporaryName({ pid: deadPid() }));
    mkdirSync(join(trash, "x"), { recursive: true });
    writeFileSync(join(trash, "x/demo_0.9.efi"), "old");

    await openArtifactStore({ artifacts: root });
    expect(readdirSync(dir).sort()).toEqual(kept.sort());
    expect(existsSync(trash)).toBe(false);
    for (const name of gone) expect(existsSync(join(dir, name))).toBe(false);
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

  it("aborts the multipart uploads killed servers left under incoming/ at start-up, not those still going", async () => {
    const store = await S3ArtifactStore.open({ url: "s3://basalt/multipart", endpoint: s3.endpoint, env: s3.env });
    // s3rver cannot list multipart uploads (NotImplemented): the store starts without.
    expect(await store.recover()).toEqual([]);
    const client = (store as unknown as { client: Client }).client;
    const upload = (key: string, hoursAgo: number) => ({ key, uploadId: `id-${key}`, initiated: new Date(Date.now() - hoursAgo * 3600_000), storageClass: "" });
    const list = vi.spyOn(client, "listIncompleteUploadsQuery").mockResolvedValue({
      uploads: [upload("multipart/incoming/demo/1.0/demo_1.0.efi", 3), upload("multipart/incoming/demo/2.0/demo_2.0.efi", 0.1)],
      prefixes: [],
      isTruncated: false,
      nextKeyMarker: "",
      nextUploadIdMarker: "",
    });
    const abort = vi.spyOn(client, "abortMultipartUpload").mockResolvedValue();
    expect(await store.recover()).toEqual(["multipart/incoming/demo/1.0/demo_1.0.efi"]);
    expect(list).toHaveBeenCalledWith("basalt", "multipart/incoming/", "", "", "");
    expect(abort.mock.calls).toEqual([["basalt", "multipart/incoming/demo/1.0/demo_1.0.efi", "id-multipart/incoming/demo/1.0/demo_1.0.efi"]]);
    // Credentials that may not list or abort them: the store starts all the same (a lifecycle rule cleans up).
    const denied = Object.assign(new Error("Access Denied."), { code: "AccessDenied" });
    abort.mockRejectedValueOnce(denied);
    expect(await store.recover()).toEqual([]);
    list.mockRejectedValueOnce(denied);
    expect(await store.recover()).toEqual([]);
    list.mockRejectedValueOnce(Object.assign(new Error("We encountered an internal error."), { code: "InternalError" }));
    await expect(store.recover()).rejects.toThrow("list uploads s3://basalt/multipart/incoming/: InternalError: We encountered an internal error.");
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
    // Only a device that checked for updates before has its download recorded.
    await new SimulatedDevice({ server: server.url, image: "demo", channel: "stable", version: "0.9", machine: "ab".repeat(16) }).poll();
    // A device checks before it downloads; a download from a machine-id never seen is not recorded.
    await (await fetch(`${server.url}/v1/stable/demo/x86-64/${"ab".repeat(16)}/0.9/SHA256SUMS`)).arrayBuffer();
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
      const { manifest, files } = await standInRelease("demo", "2.0");
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
