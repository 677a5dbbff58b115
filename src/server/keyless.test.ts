// basalt serve holds no key (issue 11, "Roles and authorities"). A release carries every index a
// device can be shown, signed when it was made; the server only chooses among them. Proven here:
// the server starts with nothing to sign with and never signs (openpgp's signing is watched), a full
// cycle (upload, commit, promote, staged rollout, pins, a channel with nothing to offer) serves
// exactly the bytes `basalt release` signed, a release signed with another key is served as it is
// (the device's keyring refuses it), a release whose indexes do not belong to it is refused and
// leaves nothing behind, and no module of the server can reach the signing code.
import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import * as openpgp from "openpgp";
import { afterEach, describe, expect, it, vi } from "vitest";
import { databaseEngines } from "../../tests/support/database-engines.js";
import { manifestFor, OPERATOR_TOKEN, signedManifest, startTestServer, type TestServer, testUpdateKey } from "../../tests/support/fleet-server.js";
import type { ReleaseManifest } from "../contract/release-manifest.js";
import { deviceFileUrl } from "../contract/urls.js";
import { ensureUpdateKey, type UpdateKeyPaths } from "../keys/update-key.js";
import { verifyDetached } from "../keys/update-signature.js";

// openpgp's signing and private-key calls, counted: the server must make none.
vi.mock("openpgp", async (importOriginal) => {
  const real = await importOriginal<typeof import("openpgp")>();
  return {
    ...real,
    sign: vi.fn(real.sign),
    readPrivateKey: vi.fn(real.readPrivateKey),
    decryptKey: vi.fn(real.decryptKey),
    generateKey: vi.fn(real.generateKey),
  };
});
const signingCalls = () =>
  [openpgp.sign, openpgp.readPrivateKey, openpgp.decryptKey, openpgp.generateKey].reduce((n, f) => n + vi.mocked(f).mock.calls.length, 0);

const ROOT = resolve(import.meta.dirname, "../..");
const { engines, fresh } = databaseEngines("keyless");
const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

const auth = { authorization: `Bearer ${OPERATOR_TOKEN}` };
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
/** Machine-ids of tests/../fleet.test.ts: whether each is inside a 25 % rollout of demo 2.0 was computed outside this code (Python's hashlib). */
const machine = (i: number) => createHash("sha256").update(`basalt-test-device-${i}`).digest("hex").slice(0, 32);
const IN_AT_25 = [2, 7];
const OUT_AT_25 = [0, 1];

interface Release {
  manifest: ReleaseManifest;
  files: Record<string, Buffer>;
}

/** A release of `version` made of random bytes, signed with `key`. */
async function release(version: string, key: UpdateKeyPaths): Promise<Release> {
  const files = {
    [`demo_${version}.efi`]: Buffer.from(`uki ${version} ${Math.random()}`),
    [`demo_${version}.root-x86-64.${randomUUID()}.raw.xz`]: Buffer.from(`root ${version} ${Math.random()}`),
  };
  return { manifest: await manifestFor("demo", version, files, key), files };
}

async function api(s: TestServer, method: string, path: string, body?: unknown, raw?: Buffer) {
  const r = await fetch(`${s.url}/api/v1${path}`, {
    method,
    headers: { ...auth, ...(raw ? { "content-type": "application/octet-stream" } : body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(raw ? { body: new Uint8Array(raw) } : body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as Record<string, unknown> | undefined };
}

/** `basalt publish` over the API: begin, each file, commit. */
async function upload(s: TestServer, r: Release): Promise<void> {
  const base = `/releases/demo/${r.manifest.version}`;
  expect((await api(s, "POST", base, r.manifest)).status).toBe(200);
  for (const [name, bytes] of Object.entries(r.files)) expect((await api(s, "PUT", `${base}/${name}`, undefined, bytes)).status).toBe(200);
  expect((await api(s, "POST", `${base}/commit`)).status).toBe(200);
}

/** What one device is served for its index, signature and armored signature (status and bytes). */
async function shown(s: TestServer, m: string, channel = "stable") {
  const get = async (file: string) => {
    const r = await fetch(deviceFileUrl(s.url, { channel, image: "demo", arch: "x86-64", machine: m, booted: "0.9", boot: "cd".repeat(16) }, file));
    return { status: r.status, bytes: Buffer.from(await r.arrayBuffer()) };
  };
  const [index, signature, armored] = await Promise.all([get("SHA256SUMS"), get("SHA256SUMS.gpg"), get("SHA256SUMS.asc")]);
  return { index, signature, armored };
}

/** The bytes of one of a release's signed indexes as `basalt release` made them. */
const signed = (r: Release, offers: "release" | "nothing") => {
  const x = r.manifest.indexes[offers];
  return { index: x.index.base64, signature: x.signature.base64, armored: x.armored.base64 };
};
const served = (v: Awaited<ReturnType<typeof shown>>) => {
  for (const part of [v.index, v.signature, v.armored]) expect(part.status).toBe(200);
  return { index: v.index.bytes.toString("base64"), signature: v.signature.bytes.toString("base64"), armored: v.armored.bytes.toString("base64") };
};

describe.each(engines)("basalt serve without a key, on %s", (backend) => {
  async function server(): Promise<TestServer> {
    const database = await fresh(backend);
    const s = await startTestServer(database ? { database } : {});
    servers.push(s);
    return s;
  }

  it("runs a whole cycle without signing anything, and every index and signature it serves is one `basalt release` signed, byte for byte", async () => {
    const appliance = await testUpdateKey();
    const intruder = await ensureUpdateKey(mkdtempSync(join(tmpdir(), "basalt-intruder-")), "intruder");
    const publicKey = readFileSync(appliance.publicKey, "utf8");
    // Everything is signed before the server starts: from here on, nothing may sign.
    const [v1, v2, v3] = [await release("1.0", appliance), await release("2.0", appliance), await release("3.0", intruder)];
    vi.mocked(openpgp.sign).mockClear();
    for (const f of [openpgp.readPrivateKey, openpgp.decryptKey, openpgp.generateKey]) vi.mocked(f).mockClear();

    const s = await server();
    // Nothing published: there is no signed index to show.
    for (const part of Object.values(await shown(s, machine(0)))) expect(part.status).toBe(404);

    await upload(s, v1);
    expect((await api(s, "POST", "/channels/stable/promote", { id: "demo", version: "1.0" })).status).toBe(200);
    await upload(s, v2);
    expect((await api(s, "POST", "/channels/stable/promote", { id: "demo", version: "2.0", percent: 25 })).status).toBe(200);
    // Staged by the machine-id's hash: the devices inside see 2.0's index, the others 1.0's.
    for (const i of IN_AT_25) expect(served(await shown(s, machine(i))), `device ${i}`).toEqual(signed(v2, "release"));
    for (const i of OUT_AT_25) expect(served(await shown(s, machine(i))), `device ${i}`).toEqual(signed(v1, "release"));
    // Pins, of a device and of a group, ahead of and behind the rollout.
    const [behind, ahead] = [machine(IN_AT_25[0] as number), machine(OUT_AT_25[0] as number)];
    expect((await api(s, "PUT", `/pins/demo/device/${ahead}`, { version: "2.0" })).status).toBe(200);
    expect((await api(s, "POST", "/groups/demo/lab", { machines: [behind] })).status).toBe(200);
    expect((await api(s, "PUT", "/pins/demo/group/lab", { version: "1.0" })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100)); // the channel cache's second; the held views are per boot
    const later = async (m: string) => served(await shown(s, m, "stable"));
    // A held view lasts 30 s within a boot: a new boot is a new check.
    const reboot = async (m: string) => {
      const r = await fetch(
        deviceFileUrl(s.url, { channel: "stable", image: "demo", arch: "x86-64", machine: m, booted: "0.8", boot: "ef".repeat(16) }, "SHA256SUMS"),
      );
      return r.status;
    };
    expect(await reboot(ahead)).toBe(200);
    expect(await reboot(behind)).toBe(200);
    expect(await later(ahead)).toEqual(signed(v2, "release"));
    expect(await later(behind)).toEqual(signed(v1, "release"));

    // Channels with nothing to offer show the newest release's index that offers nothing: one that
    // does not exist, and one whose only release is paused.
    expect(served(await shown(s, machine(3), "beta"))).toEqual(signed(v2, "nothing"));
    expect((await api(s, "POST", "/channels/edge/promote", { id: "demo", version: "2.0" })).status).toBe(200);
    expect((await api(s, "POST", "/rollouts/demo/edge/2.0", { paused: true })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    expect(served(await shown(s, machine(4), "edge"))).toEqual(signed(v2, "nothing"));

    // Whatever it served verifies against the appliance's key, as the device's gpg would check it.
    const v2index = Buffer.from(v2.manifest.indexes.release.index.base64, "base64");
    expect(await verifyDetached(publicKey, v2index, Buffer.from(v2.manifest.indexes.release.signature.base64, "base64"))).toBe(true);

    // A release signed with another key is taken (the server holds no key to tell) and served as
    // signed; the device's keyring, the appliance's key, refuses it.
    await upload(s, v3);
    expect((await api(s, "POST", "/channels/stable/promote", { id: "demo", version: "3.0" })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    const foreign = served(await shown(s, machine(5)));
    expect(foreign).toEqual(signed(v3, "release"));
    expect(await verifyDetached(publicKey, Buffer.from(foreign.index, "base64"), Buffer.from(foreign.signature, "base64"))).toBe(false);
    expect(await verifyDetached(publicKey, Buffer.from(foreign.index, "base64"), Buffer.from(foreign.armored, "base64").toString("utf8"))).toBe(false);
    // Who signed each release is on record.
    const { body } = await api(s, "GET", "/releases");
    const signedBy = ((body?.releases ?? []) as { version: string; signedBy: string }[]).map((r) => [r.version, r.signedBy]);
    expect(signedBy).toEqual([
      ["1.0", v1.manifest.signingKey],
      ["2.0", v2.manifest.signingKey],
      ["3.0", v3.manifest.signingKey],
    ]);
    expect(v3.manifest.signingKey).not.toBe(v1.manifest.signingKey);
    const commits = (await s.fleet.db.auditLog()).filter((e) => e.action === "commit").map((e) => [e.actor, e.detail.version, e.detail.signedBy]);
    expect(commits).toEqual([
      ["token", "3.0", v3.manifest.signingKey],
      ["token", "2.0", v2.manifest.signingKey],
      ["token", "1.0", v1.manifest.signingKey],
    ]);

    expect(signingCalls()).toBe(0);
    // Nothing that could sign is in its data directory either.
    const found: string[] = [];
    const walk = (d: string) => {
      for (const n of readdirSync(d, { withFileTypes: true })) {
        if (n.isDirectory()) walk(join(d, n.name));
        else if (/PRIVATE KEY/.test(readFileSync(join(d, n.name)).toString("latin1"))) found.push(n.name);
      }
    };
    walk(s.data);
    expect(found).toEqual([]);
  });

  describe("refuses a release whose indexes do not belong to it, and keeps nothing of it", () => {
    /** Indexes, their listing or the key changed after signing; `other` is the same release signed with another key. */
    const forgeries: [string, (r: Release, other: Release) => Promise<ReleaseManifest>, RegExp][] = [
      [
        "its index leaves out a file",
        async (r) => ({ ...(await signedManifest("demo", "1.0", r.manifest.files.slice(1))), files: r.manifest.files }),
        /^demo 1\.0: SHA256SUMS does not list demo_1\.0\.efi$/,
      ],
      [
        "its index gives a file another SHA-256",
        async (r) => ({
          ...(await signedManifest(
            "demo",
            "1.0",
            r.manifest.files.map((f, i) => (i === 0 ? { ...f, sha256: "0".repeat(64) } : f)),
          )),
          files: r.manifest.files,
        }),
        /^demo 1\.0: SHA256SUMS gives demo_1\.0\.efi another SHA-256 than the release manifest$/,
      ],
      [
        "its index lists a file it does not have",
        async (r) => ({
          ...(await signedManifest("demo", "1.0", [...r.manifest.files, { ...(r.manifest.files[0] as ReleaseManifest["files"][0]), name: "demo_0.9.efi" }])),
          files: r.manifest.files,
        }),
        /^demo 1\.0: SHA256SUMS lists demo_0\.9\.efi, which is not a file of demo 1\.0$/,
      ],
      [
        "its signature is damaged",
        async (r) => withFile(r.manifest, "release", "signature", (b) => b.map((x, i) => (i === b.length - 3 ? x ^ 0x55 : x))),
        /^demo 1\.0: SHA256SUMS\.gpg is not a signature of SHA256SUMS by the release's key [0-9A-F]{40}$/,
      ],
      [
        "its armored signature is another index's",
        async (r, other) => withFile(r.manifest, "release", "armored", () => Buffer.from(other.manifest.indexes.release.armored.base64, "base64")),
        /^demo 1\.0: SHA256SUMS\.asc is not a signature of SHA256SUMS by the release's key/,
      ],
      [
        "its index that offers nothing offers the release",
        async (r) => ({
          ...r.manifest,
          indexes: {
            ...r.manifest.indexes,
            nothing: {
              index: { ...r.manifest.indexes.release.index, name: "SHA256SUMS.nothing" },
              signature: { ...r.manifest.indexes.release.signature, name: "SHA256SUMS.nothing.gpg" },
              armored: { ...r.manifest.indexes.release.armored, name: "SHA256SUMS.nothing.asc" },
            },
          },
        }),
        /^demo 1\.0: SHA256SUMS\.nothing does not list basalt-nothing-offered$/,
      ],
      [
        "it is signed with another key than the one it carries",
        async (r, other) => ({ ...other.manifest, files: r.manifest.files, publicKey: r.manifest.publicKey, signingKey: r.manifest.signingKey }),
        /^demo 1\.0: SHA256SUMS\.gpg is not a signature of SHA256SUMS by the release's key [0-9A-F]{40}$/,
      ],
      [
        "its signingKey is not its public key's fingerprint",
        async (r, other) => ({ ...r.manifest, signingKey: other.manifest.signingKey }),
        /^demo 1\.0: signingKey [0-9A-F]{40} is not the fingerprint of the release's public key \([0-9A-F]{40}\)$/,
      ],
      [
        "a listed index is not the bytes it carries",
        async (r) => ({
          ...r.manifest,
          indexes: {
            ...r.manifest.indexes,
            release: { ...r.manifest.indexes.release, index: { ...r.manifest.indexes.release.index, sha256: "1".repeat(64) } },
          },
        }),
        /^demo 1\.0: SHA256SUMS does not have the SHA-256 the release manifest gives it$/,
      ],
    ];

    it.each(forgeries)("%s", async (_what, forge, message) => {
      const key = await testUpdateKey();
      const intruder = await ensureUpdateKey(mkdtempSync(join(tmpdir(), "basalt-intruder-")), "intruder");
      const r = await release("1.0", key);
      // The same release, signed by an intruder.
      const other = { manifest: await manifestFor("demo", "1.0", r.files, intruder), files: r.files };
      const forged = await forge(r, other);
      const s = await server();
      const audit = await s.fleet.db.auditLog();
      const begun = await api(s, "POST", "/releases/demo/1.0", forged);
      expect(begun.status).toBe(400);
      expect(begun.body?.error).toMatch(message);
      // Nothing kept: no upload, no release, no file, no audit entry; the files cannot be sent.
      expect(await s.fleet.db.upload("demo", "1.0")).toBeUndefined();
      expect(await s.fleet.db.releases()).toEqual([]);
      expect(await s.fleet.db.auditLog()).toEqual(audit);
      for (const area of ["incoming", "releases"]) expect(existsSync(join(s.data, area, "demo"))).toBe(false);
      const [name, bytes] = Object.entries(r.files)[0] as [string, Buffer];
      expect((await api(s, "PUT", `/releases/demo/1.0/${name}`, undefined, bytes)).status).toBe(404);
      expect((await api(s, "POST", "/releases/demo/1.0/commit")).status).toBe(404);
      // The genuine release goes through.
      await upload(s, r);
      expect((await api(s, "POST", "/channels/stable/promote", { id: "demo", version: "1.0" })).status).toBe(200);
      expect(served(await shown(s, machine(0)))).toEqual(signed(r, "release"));
    });

    it("says what to do with a release.json an older Basalt wrote (format 1, no indexes)", async () => {
      const { publicKey: _key, indexes: _indexes, ...old } = (await release("1.0", await testUpdateKey())).manifest;
      const s = await server();
      const begun = await api(s, "POST", "/releases/demo/1.0", { ...old, format: 1 });
      expect(begun.status).toBe(400);
      expect(begun.body?.error).toBe(
        "body.format: expected 2: an older Basalt's release.json carries no signed indexes; run 'basalt release' again with this version",
      );
      expect(await s.fleet.db.upload("demo", "1.0")).toBeUndefined();
    });

    it("checks again at commit: an upload whose indexes changed after it began is refused before any file moves", async () => {
      const r = await release("1.0", await testUpdateKey());
      const s = await server();
      expect((await api(s, "POST", "/releases/demo/1.0", r.manifest)).status).toBe(200);
      for (const [name, bytes] of Object.entries(r.files)) expect((await api(s, "PUT", `/releases/demo/1.0/${name}`, undefined, bytes)).status).toBe(200);
      // The stored upload, changed behind the server's back (or by a server that did not check).
      const changed = await withFile(r.manifest, "release", "signature", (b) => b.map((x, i) => (i === 20 ? x ^ 1 : x)));
      await s.fleet.db.kysely
        .updateTable("uploads")
        .set({ manifest: JSON.stringify(changed) })
        .where("version", "=", "1.0")
        .execute();
      const moved = vi.spyOn(s.fleet.artifacts, "commit");
      const commit = await api(s, "POST", "/releases/demo/1.0/commit");
      expect(commit.status).toBe(400);
      expect(commit.body?.error).toMatch(/^demo 1\.0: SHA256SUMS\.gpg is not a signature of SHA256SUMS/);
      expect(moved).not.toHaveBeenCalled();
      expect(await s.fleet.db.release("demo", "1.0")).toBeUndefined();
      expect(existsSync(join(s.data, "releases", "demo"))).toBe(false);
    });
  });
});

/** `m` with one file of one of its indexes replaced by `change` of its bytes, listed as the new bytes (size and SHA-256). */
async function withFile(
  m: ReleaseManifest,
  offers: "release" | "nothing",
  part: "index" | "signature" | "armored",
  change: (b: Buffer) => Uint8Array,
): Promise<ReleaseManifest> {
  const f = m.indexes[offers][part];
  const bytes = Buffer.from(change(Buffer.from(f.base64, "base64")));
  const file = { ...f, size: bytes.length, sha256: sha(bytes), base64: bytes.toString("base64") };
  return { ...m, indexes: { ...m.indexes, [offers]: { ...m.indexes[offers], [part]: file } } };
}

describe("the server's code", () => {
  /** The modules `entry` imports, and theirs, by relative path (what runs when it runs). */
  function reachable(entry: string): Set<string> {
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*|new URL\(\s*)["'](\.{1,2}\/[^"']+)["']/g)) {
        const spec = m[1] as string;
        const target = resolve(dirname(file), spec.replace(/\.js$/, ".ts"));
        if (existsSync(target)) visit(target);
        else if (existsSync(resolve(dirname(file), spec))) visit(resolve(dirname(file), spec));
      }
    };
    visit(entry);
    return seen;
  }
  const modules = (dir: string): string[] =>
    readdirSync(join(ROOT, dir), { recursive: true, encoding: "utf8" })
      .filter((f) => /\.(ts|mjs)$/.test(f) && !/\.test\.ts$/.test(f))
      .map((f) => join(ROOT, dir, f));
  /** Whatever can sign with, or read, a private key. */
  const SIGNING = /\bsignDetached\b|\bopenpgp\.(sign|readPrivateKey|decryptKey|generateKey)\b|\bupdate\.pgp\.key\b/;
  const signingModules = (entry: string) =>
    [...reachable(entry)].filter((f) => f.endsWith("keys/update-key.ts") || SIGNING.test(readFileSync(f, "utf8"))).map((f) => relative(ROOT, f));

  it("cannot reach the signing code from any module of src/fleet or src/server", () => {
    const entries = [...modules("src/fleet"), ...modules("src/server")];
    expect(entries.length).toBeGreaterThan(30);
    expect(entries.flatMap((e) => signingModules(e).map((s) => `${relative(ROOT, e)} → ${s}`))).toEqual([]);
  });

  it("would notice: `basalt release` reaches it", () => {
    expect(signingModules(join(ROOT, "src/release/release.ts"))).toEqual(expect.arrayContaining(["src/keys/update-key.ts", "src/release/indexes.ts"]));
  });
});
