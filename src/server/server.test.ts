import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { manifestFor, testUpdateKey } from "../../tests/support/fleet-server.js";
import { deviceFileUrl } from "../contract/urls.js";
import { verifyDetached } from "../keys/update-signature.js";
import { parseSha256Sums } from "../release/sha256sums.js";
import { createServer, openFleet } from "./server.js";

const TOKEN = "s3cret-operator-token";
const auth = { authorization: `Bearer ${TOKEN}` };
const MID = "0123456789abcdef0123456789abcdef";
const dev = (file: string, machine = MID, channel = "stable") => deviceFileUrl("", { channel, image: "demo", arch: "x86-64", machine, booted: "1.0" }, file);
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

let publicKey: string;
const apps: FastifyInstance[] = [];

beforeAll(async () => {
  publicKey = readFileSync((await testUpdateKey()).publicKey, "utf8");
});
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});

async function server(token: string | null = TOKEN) {
  const fleet = await openFleet({ data: mkdtempSync(join(tmpdir(), "basalt-srv-")), holdSeconds: 60 });
  const app = createServer({ fleet, auth: { secret: randomBytes(32), credentials: { operators: [], ...(token ? { token } : {}) } } });
  apps.push(app);
  return { app, fleet };
}

const release = (version: string, files: Record<string, Buffer>) => manifestFor("demo", version, files);

async function publish(app: FastifyInstance, version: string, files: Record<string, Buffer>, channel = "stable") {
  const m = await release(version, files);
  expect((await app.inject({ method: "POST", url: `/api/v1/releases/demo/${version}`, headers: auth, payload: m })).statusCode).toBe(200);
  for (const [name, body] of Object.entries(files)) {
    const r = await app.inject({
      method: "PUT",
      url: `/api/v1/releases/demo/${version}/${name}`,
      headers: { ...auth, "content-type": "application/octet-stream" },
      payload: body,
    });
    expect(r.statusCode, r.body).toBe(200);
  }
  expect((await app.inject({ method: "POST", url: `/api/v1/releases/demo/${version}/commit`, headers: auth })).statusCode).toBe(200);
  const p = await app.inject({ method: "POST", url: `/api/v1/channels/${channel}/promote`, headers: auth, payload: { id: "demo", version } });
  expect(p.statusCode, p.body).toBe(200);
}

const v1 = { "demo_1.0.efi": randomBytes(5000), "demo_1.0.root-x86-64.11111111-2222-3333-4444-555555555555.raw.xz": randomBytes(20000) };
const v2 = {
  "demo_2.0.efi": randomBytes(6000),
  "demo_2.0.root-x86-64.66666666-2222-3333-4444-555555555555.raw.xz": randomBytes(21000),
  // Real names run past 64 characters.
  "demo_2.0.root-x86-64-verity-sig.66666666-2222-3333-4444-555555555555.raw.xz": randomBytes(300),
};

describe("basalt serve: what devices see", () => {
  it("has no index to show before a release is published (404), then a signed one that offers nothing (never an empty body: systemd-pull 257 fails on one)", async () => {
    const { app } = await server();
    for (const file of ["SHA256SUMS", "SHA256SUMS.gpg", "SHA256SUMS.asc"]) expect((await app.inject(dev(file))).statusCode).toBe(404);
    await publish(app, "1.0", v1, "beta");
    const r = await app.inject(dev("SHA256SUMS"));
    expect(r.statusCode).toBe(200);
    expect(parseSha256Sums(r.body).map((e) => e.name)).toEqual(["basalt-nothing-offered"]);
    const sig = await app.inject(dev("SHA256SUMS.gpg"));
    expect(sig.statusCode).toBe(200);
    expect(await verifyDetached(publicKey, r.rawPayload, sig.rawPayload)).toBe(true);
    expect((await app.inject(dev("demo_1.0.efi"))).statusCode).toBe(404);
  });

  it("serves the offered release's signed index, which lists that release alone, and the files it lists, byte for byte", async () => {
    const { app } = await server();
    await publish(app, "1.0", v1);
    await publish(app, "2.0", v2);
    const index = await app.inject(dev("SHA256SUMS"));
    expect(index.headers["content-length"]).toBe(String(index.rawPayload.length));
    expect(index.headers["content-encoding"]).toBeUndefined();
    const entries = parseSha256Sums(index.body);
    expect(entries.map((e) => e.name).sort()).toEqual(Object.keys(v2).sort());
    const sig = await app.inject(dev("SHA256SUMS.gpg"));
    expect(await verifyDetached(publicKey, index.rawPayload, sig.rawPayload)).toBe(true);
    for (const e of entries) {
      const f = await app.inject({ url: dev(e.name), headers: { "accept-encoding": "gzip, br" } });
      expect(f.statusCode).toBe(200);
      expect(sha(f.rawPayload)).toBe(e.sha256);
      expect(f.headers["content-length"]).toBe(String(f.rawPayload.length));
      expect(f.headers["content-encoding"]).toBeUndefined();
      expect(f.headers.etag).toBeTruthy();
      expect(f.headers["last-modified"]).toBeTruthy();
    }
  });

  it("answers HEAD, Range and conditional requests", async () => {
    const { app } = await server();
    await publish(app, "1.0", v1);
    const name = "demo_1.0.efi";
    const head = await app.inject({ method: "HEAD", url: dev(name) });
    expect(head.statusCode).toBe(200);
    expect(head.headers["content-length"]).toBe("5000");
    expect(head.rawPayload.length).toBe(0);
    const part = await app.inject({ url: dev(name), headers: { range: "bytes=100-199" } });
    expect(part.statusCode).toBe(206);
    expect(part.headers["content-range"]).toBe("bytes 100-199/5000");
    expect(part.rawPayload.equals(v1[name].subarray(100, 200))).toBe(true);
    const again = await app.inject({ url: dev(name), headers: { "if-none-match": String(head.headers.etag) } });
    expect(again.statusCode).toBe(304);
  });

  it("never serves anything outside the channel's releases", async () => {
    const { app } = await server();
    await publish(app, "1.0", v1);
    await publish(app, "2.0", v2, "beta");
    for (const path of [
      dev("..%2f..%2f..%2fetc%2fpasswd"),
      dev("%2e%2e"),
      dev("release.json"),
      dev("demo_2.0.efi"), // only on beta
      "/v1/stable/demo/x86-64/not-a-machine-id/1.0/SHA256SUMS",
      "/v1/stable/demo/x86-64/../../../../etc/passwd",
      `/v1/stable/demo/x86-64/${MID}/1.0/..%5c..%5cetc%5cpasswd`,
    ]) {
      const r = await app.inject(path);
      // Malformed: 400 with the reason; well-formed but not offered: 404.
      expect([400, 404], path).toContain(r.statusCode);
      expect(r.body).not.toMatch(/root:/);
    }
    expect((await app.inject(dev("demo_2.0.efi", MID, "beta"))).statusCode).toBe(200);
  });

  it("keeps index and signature of one device on one index while a publish swaps the channel", async () => {
    const { app } = await server();
    await publish(app, "1.0", v1);
    const devices = Array.from({ length: 20 }, (_, i) => i.toString(16).padStart(32, "0"));
    const pairs = devices.map(async (m, i) => {
      const index = await app.inject(dev("SHA256SUMS", m));
      // Half the devices ask for the signature only after the channel moved on.
      if (i % 2) await new Promise((r) => setTimeout(r, 400));
      const sig = await app.inject(dev("SHA256SUMS.gpg", m));
      return verifyDetached(publicKey, index.rawPayload, sig.rawPayload);
    });
    await new Promise((r) => setTimeout(r, 100));
    await publish(app, "2.0", v2);
    expect(await Promise.all(pairs)).toEqual(devices.map(() => true));
    const fresh = await app.inject(dev("SHA256SUMS", "f".repeat(32)));
    expect(parseSha256Sums(fresh.body).some((e) => e.name === "demo_2.0.efi")).toBe(true);
  });
});

describe("basalt serve: operator API", () => {
  it("refuses missing or wrong tokens, and everything when no token is configured", async () => {
    const { app } = await server();
    expect((await app.inject({ method: "GET", url: "/api/v1/channels" })).statusCode).toBe(401);
    expect((await app.inject({ method: "GET", url: "/api/v1/channels", headers: { authorization: "Bearer nope" } })).statusCode).toBe(401);
    expect((await app.inject({ method: "POST", url: "/api/v1/channels/stable/promote", payload: { id: "demo", version: "1.0" } })).statusCode).toBe(401);
    const open = (await server(null)).app;
    expect((await open.inject({ method: "GET", url: "/api/v1/channels", headers: auth })).statusCode).toBe(401);
  });

  it("rejects a file whose hash differs from the release manifest, and commits only complete releases", async () => {
    const { app, fleet } = await server();
    const m = await release("1.0", v1);
    await app.inject({ method: "POST", url: "/api/v1/releases/demo/1.0", headers: auth, payload: m });
    const bad = await app.inject({
      method: "PUT",
      url: "/api/v1/releases/demo/1.0/demo_1.0.efi",
      headers: { ...auth, "content-type": "application/octet-stream" },
      payload: randomBytes(5000),
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatch(/does not match/);
    const commit = await app.inject({ method: "POST", url: "/api/v1/releases/demo/1.0/commit", headers: auth });
    expect(commit.statusCode).toBe(400);
    expect(await fleet.db.release("demo", "1.0")).toBeUndefined();
    const promote = await app.inject({ method: "POST", url: "/api/v1/channels/stable/promote", headers: auth, payload: { id: "demo", version: "1.0" } });
    expect(promote.statusCode).toBe(404);
  });

  it("does not let a published version change", async () => {
    const { app } = await server();
    await publish(app, "1.0", v1);
    const changed = Object.fromEntries(Object.keys(v1).map((name) => [name, randomBytes(100)]));
    const again = await app.inject({ method: "POST", url: "/api/v1/releases/demo/1.0", headers: auth, payload: await release("1.0", changed) });
    expect(again.statusCode).toBe(409);
    expect(again.json().error).toMatch(/immutable/);
  });
});

describe("basalt publish", () => {
  it("uploads a release over HTTP and offers it; a wrong token changes nothing", async () => {
    const { mkdirSync, writeFileSync } = await import("node:fs");
    const { appliance } = await import("../../tests/support/fixtures.js");
    const { publishRelease } = await import("./publish.js");
    const { createReporter } = await import("../report/reporter.js");
    const dir = appliance('id = "demo"\nversion = "1.0"\n');
    const rel = join(dir, "out", "releases", "1.0");
    mkdirSync(rel, { recursive: true });
    for (const [name, b] of Object.entries(v1)) writeFileSync(join(rel, name), b);
    writeFileSync(join(rel, "release.json"), JSON.stringify(await release("1.0", v1)));
    const { app, fleet } = await server();
    const url = await app.listen({ host: "127.0.0.1", port: 0 });
    const reporter = createReporter({ quiet: true });
    await expect(publishRelease(dir, { server: url, token: "wrong-token-wrong-token", channel: "stable", reporter })).rejects.toThrow(/401/);
    expect(await fleet.db.channel("demo", "stable")).toBeUndefined();
    const state = await publishRelease(dir, { server: url, token: TOKEN, channel: "stable", reporter });
    expect(state.versions).toEqual(["1.0"]);
    const index = await (await fetch(`${url}${dev("SHA256SUMS")}`)).text();
    expect(
      parseSha256Sums(index)
        .map((e) => e.name)
        .sort(),
    ).toEqual(Object.keys(v1).sort());
  });
});
