// The listener's timeouts and TLS, over real sockets: a trickled body or header is cut off within a
// bound, a slow upload too, a normal one is not; HTTPS from files that are re-read when renewed.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, renameSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, standInRelease, startTestServer, type TestServer } from "../../tests/support/fleet-server.js";
import { rawRequest } from "../../tests/support/raw-http.js";

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});
const MID = "0123456789abcdef0123456789abcdef";
const timeouts = { headersSeconds: 1, bodySeconds: 1, uploadBytesPerWindow: 4096, idleSeconds: 5 };

async function server(o: Parameters<typeof startTestServer>[0] = {}) {
  const s = await startTestServer({ ...o, server: { timeouts, ...o.server } });
  servers.push(s);
  return { s, port: Number(new URL(s.url).port) };
}

describe("timeouts", () => {
  it("cuts off a report whose body trickles in, within a bound (it used to hold the connection for minutes)", async () => {
    const { s, port } = await server();
    await s.publish("demo", "stable", "1.0");
    const body = JSON.stringify({ event: "boot", version: "1.0", boot_id: "f".repeat(32), healthy: true, uptime_seconds: 1 });
    const r = await rawRequest({
      port,
      method: "POST",
      target: `/v1/stable/demo/x86-64/${MID}/report`,
      headers: { "content-type": "application/json", authorization: `Bearer ${s.tokenFor("demo", MID)}` },
      body,
      trickle: { bytes: 1, everyMs: 400 },
      timeoutMs: 20_000,
    });
    expect(r.status).toBe(408);
    expect(r.ms).toBeLessThan(4000);
    expect(await s.fleet.db.device("demo", MID)).toBeUndefined();
  });

  it("closes a connection whose headers never end", async () => {
    const { port } = await server();
    const r = await rawRequest({ port, method: "GET", target: "/v1/stable/demo/x86-64/x", timeoutMs: 20_000, partialHeaders: true });
    expect(r.status).toBe(408);
    expect(r.ms).toBeLessThan(4000);
  });

  it("cuts off an upload slower than the minimum rate, and takes one at full speed", async () => {
    const { s, port } = await server();
    const { manifest, files } = await standInRelease("demo", "1.0", { uki: 64 * 1024, root: 4096 });
    const auth = { authorization: `Bearer ${OPERATOR_TOKEN}` };
    expect((await s.app.inject({ method: "POST", url: "/api/v1/releases/demo/1.0", headers: auth, payload: manifest })).statusCode).toBe(200);
    const [uki, bytes] = Object.entries(files).find(([n]) => n.endsWith(".efi")) ?? [];
    const target = `/api/v1/releases/demo/1.0/${uki}`;
    const headers = { ...auth, "content-type": "application/octet-stream" };
    const slow = await rawRequest({ port, method: "PUT", target, headers, body: bytes, trickle: { bytes: 256, everyMs: 200 }, timeoutMs: 20_000 });
    expect(slow.status).toBe(408);
    expect(slow.ms).toBeLessThan(4000);
    const fast = await rawRequest({ port, method: "PUT", target, headers, body: bytes });
    expect(fast.status, fast.body).toBe(200);
    expect(
      createHash("sha256")
        .update(bytes ?? "")
        .digest("hex"),
    ).toBe(manifest.files.find((f) => f.name === uki)?.sha256);
  });
});

/** A self-signed certificate for localhost, written as the files basalt serve reads. */
function certificate(dir: string, name: string): { cert: string; key: string; fingerprint: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-addext",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout",
      key,
      "-out",
      cert,
    ],
    { stdio: "ignore" },
  );
  chmodSync(key, 0o600);
  const fingerprint = execFileSync("openssl", ["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"], { encoding: "utf8" }).split("=")[1]?.trim() ?? "";
  return { cert, key, fingerprint };
}

function peerFingerprint(url: string): Promise<{ fingerprint: string; status: number; cookies: string[] }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { rejectUnauthorized: false, agent: false }, (res) => {
      const fingerprint = (res.socket as import("node:tls").TLSSocket).getPeerCertificate().fingerprint256;
      res.resume();
      res.on("end", () => resolve({ fingerprint, status: res.statusCode ?? 0, cookies: res.headers["set-cookie"] ?? [] }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("TLS", () => {
  it("serves HTTPS from certificate files and picks up a renewed certificate without a restart", async () => {
    const dir = mkdtempSync(join(tmpdir(), "basalt-tls-"));
    const first = certificate(dir, "first");
    const { s } = await server({ server: { tls: { cert: first.cert, key: first.key, checkSeconds: 0.2 } } });
    const url = s.url.replace("http:", "https:");
    expect(url).toMatch(/^https:/);
    const a = await peerFingerprint(`${url}/ui/login`);
    expect(a.fingerprint).toBe(first.fingerprint);
    // The sign-in form's CSRF secret cookie is Secure over HTTPS.
    expect(a.cookies.join("\n")).toMatch(/; Secure/);
    const second = certificate(dir, "second");
    renameSync(second.cert, first.cert);
    renameSync(second.key, first.key);
    let now = a.fingerprint;
    for (let i = 0; i < 50 && now !== second.fingerprint; i++) {
      await new Promise((r) => setTimeout(r, 100));
      now = (await peerFingerprint(`${url}/ui/login`)).fingerprint;
    }
    expect(now).toBe(second.fingerprint);
  });

  it("refuses a TLS key others can read", async () => {
    const dir = mkdtempSync(join(tmpdir(), "basalt-tls-"));
    const c = certificate(dir, "open");
    chmodSync(c.key, 0o644);
    await expect(startTestServer({ server: { tls: { cert: c.cert, key: c.key } } })).rejects.toThrow(/readable by others/);
    writeFileSync(join(dir, "unused"), "");
  });
});
