// The server tried as an attacker would, after the README's worked example: each finding of that
// review reproduced as it was reported, and refused now.
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, standInRelease, startTestServer, type TestServer } from "../../tests/support/fleet-server.js";
import { rawRequest } from "../../tests/support/raw-http.js";
import { SimulatedDevice } from "../../tests/support/simulated-device.js";
import { addressKey, FailureCounter, hashPassword, loadOrCreateSecret, readTokenFile } from "./auth.js";

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});
async function server(o: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const s = await startTestServer(o);
  servers.push(s);
  return s;
}
const bearer = { authorization: `Bearer ${OPERATOR_TOKEN}` };
const hex = (n: number) => n.toString(16).padStart(32, "0");

describe("1. the operator API without credentials", () => {
  it("refuses percent-escaped and absolute-form spellings of operator routes, so no release can be planted and no token minted", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    const port = Number(new URL(s.url).port);
    expect((await rawRequest({ port, method: "GET", target: "/%61pi/v1/audit" })).status).toBe(401);
    expect((await rawRequest({ port, method: "GET", target: "http://x/api/v1/audit" })).status).toBe(401);
    // The attack: upload, commit and promote a release, then mint another device's report token.
    const { manifest, files } = await standInRelease("demo", "9.9");
    const json = { "content-type": "application/json" };
    const steps = [
      { method: "POST", target: "/%61pi/v1/releases/demo/9.9", body: JSON.stringify(manifest), headers: json },
      ...Object.entries(files).map(([name, b]) => ({
        method: "PUT",
        target: `http://x/api/v1/releases/demo/9.9/${name}`,
        body: b,
        headers: { "content-type": "application/octet-stream" },
      })),
      { method: "POST", target: "/%61pi/v1/releases/demo/9.9/commit" },
      { method: "POST", target: "/%61pi/v1/channels/stable/promote", body: JSON.stringify({ id: "demo", version: "9.9" }), headers: json },
      { method: "POST", target: `/%61pi/v1/device-tokens/demo/${hex(7)}` },
    ];
    for (const step of steps) {
      const r = await rawRequest({ port, ...step });
      expect(r.status, step.target).toBe(401);
      expect(r.body).not.toMatch(/"token"/);
    }
    expect(await s.fleet.db.release("demo", "9.9")).toBeUndefined();
    expect((await s.fleet.db.channel("demo", "stable"))?.rollouts.map((r) => r.version)).toEqual(["1.0"]);
    // Every entry of the audit log names who acted.
    for (const e of await s.fleet.db.auditLog()) expect(e.actor).not.toBe("?");
  });
});

describe("2. rollout state from anonymous traffic", () => {
  it("does not pause a rollout for invented devices that fetch one byte of the new UKI and come back on the old version", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "9.9");
    const uki = (await s.fleet.db.release("demo", "9.9"))?.files.find((f) => f.kind === "uki")?.name;
    for (const i of [1, 2, 3]) {
      const base = (boot: string) => `${s.url}/v1/stable/demo/x86-64/${hex(i)}/1.0/${boot}`;
      await (await fetch(`${base(hex(100 + i))}/SHA256SUMS`)).text();
      const part = await fetch(`${base(hex(100 + i))}/${uki}`, { headers: { range: "bytes=0-0" } });
      expect(part.status).toBe(206);
      await part.arrayBuffer();
      await (await fetch(`${base(hex(200 + i))}/SHA256SUMS`)).text();
    }
    const rollout = (await s.fleet.db.channel("demo", "stable"))?.rollouts.find((r) => r.version === "9.9");
    expect(rollout?.paused).toBe(false);
    const stats = await s.fleet.db.releaseStats("demo", "9.9");
    expect(stats.failures).toBeLessThanOrEqual(stats.adopters);
    expect(stats).toMatchObject({ adopters: 0, failures: 0 });
  });

  it("does not count devices invented after the release was offered, even when they fetch all of it", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "9.9");
    const fakes = [1, 2, 3, 4].map((i) => new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0", machine: hex(i) }));
    for (const d of fakes) {
      expect(await d.update()).toBe("9.9");
      d.reboot({ healthy: false });
      await d.poll();
    }
    expect((await s.fleet.db.device("demo", hex(1)))?.rolledBack).toEqual(["9.9"]);
    expect((await s.fleet.db.channel("demo", "stable"))?.rollouts.find((r) => r.version === "9.9")?.paused).toBe(false);
    expect(await s.fleet.db.releaseStats("demo", "9.9")).toMatchObject({ adopters: 0, failures: 0 });
  });

  it("keeps no device rows for images it does not serve, and no metric labels for versions it never published", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await (await fetch(`${s.url}/v1/stable/demo/x86-64/${hex(99)}/1.0/SHA256SUMS`)).text();
    for (let i = 1; i < 20; i++) {
      await (await fetch(`${s.url}/v1/stable/nosuchimage/x86-64/${hex(i)}/1.0/SHA256SUMS`)).text();
      await (await fetch(`${s.url}/v1/stable/demo/x86-64/${hex(i)}/${i}.0.${i}/SHA256SUMS`)).text();
    }
    expect((await s.fleet.db.devices({ image: "nosuchimage" })).total).toBe(0);
    const metrics = await (await fetch(`${s.url}/metrics`, { headers: bearer })).text();
    const versions = [...metrics.matchAll(/^basalt_devices\{image="demo",version="([^"]+)"\} (\d+)$/gm)].map((m) => [m[1], m[2]]);
    expect(versions).toEqual([
      ["1.0", "1"],
      ["other", "19"],
    ]);
    expect(metrics).not.toMatch(/nosuchimage/);
  });

  it("limits how fast one client may ask the device routes", async () => {
    const s = await server({ server: { deviceRateLimit: 5 } });
    await s.publish("demo", "stable", "1.0");
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await fetch(`${s.url}/v1/stable/demo/x86-64/${hex(i)}/1.0/SHA256SUMS`)).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    // Operators are not device clients.
    expect((await fetch(`${s.url}/api/v1/channels`, { headers: bearer })).status).toBe(200);
  });
});

describe("3. sign-in throttling", () => {
  const operators = () => [{ name: "alice", hash: hashPassword("alices-long-password") }];
  async function signIn(s: TestServer, password: string, headers: Record<string, string> = {}, remoteAddress = "127.0.0.1") {
    const page = await s.app.inject({ url: "/ui/login", remoteAddress });
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)?.[1] ?? "";
    const cookies = Object.fromEntries(page.cookies.map((c) => [c.name, c.value]));
    return s.app.inject({
      method: "POST",
      url: "/ui/login",
      remoteAddress,
      cookies,
      headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
      payload: new URLSearchParams({ csrf, name: "alice", password, next: "/ui/" }).toString(),
    });
  }

  it("ignores X-Forwarded-For unless the peer is a trusted proxy: a new header per guess does not reset the count", async () => {
    const s = await server({ auth: { operators: operators() } });
    const statuses: number[] = [];
    for (let i = 0; i < 7; i++) statuses.push((await signIn(s, `wrong-password-${i}`, { "x-forwarded-for": `198.51.100.${i}` })).statusCode);
    expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
    expect(statuses.slice(5)).toEqual([429, 429]);
    // Throttled attempts are refused without checking the password, even the right one.
    const right = await signIn(s, "alices-long-password", { "x-forwarded-for": "203.0.113.9" });
    expect(right.statusCode).toBe(429);
    expect(right.headers["retry-after"]).toBeDefined();
  });

  it("behind a trusted proxy, counts the real client: a flood of other addresses does not clear a throttled one", async () => {
    const s = await server({ auth: { operators: operators() }, server: { trustProxy: ["127.0.0.1"] } });
    // The proxy terminates TLS and says so; operator credentials never cross a network in clear text.
    const from = (ip: string) => ({ "x-forwarded-for": ip, "x-forwarded-proto": "https" });
    for (let i = 0; i < 5; i++) expect((await signIn(s, "wrong-password", from("192.0.2.10"))).statusCode).toBe(401);
    expect((await signIn(s, "alices-long-password", from("192.0.2.10"))).statusCode).toBe(429);
    // Another client behind the same proxy signs in.
    expect((await signIn(s, "alices-long-password", from("192.0.2.11"))).statusCode).toBe(303);
    // Other addresses failing do not lift it.
    for (let i = 0; i < 20; i++) expect([401, 429]).toContain((await signIn(s, "wrong-password", from(`10.9.0.${i}`))).statusCode);
    expect((await signIn(s, "alices-long-password", from("192.0.2.10"))).statusCode).toBe(429);
  });

  it("slows down guessing at one operator's password spread over many addresses", async () => {
    const s = await server({ auth: { operators: operators() }, server: { trustProxy: ["127.0.0.1"] } });
    const from = (ip: string) => ({ "x-forwarded-for": ip, "x-forwarded-proto": "https" });
    for (let i = 0; i < 20; i++) expect((await signIn(s, "wrong-password", from(`10.8.0.${i}`))).statusCode).toBe(401);
    expect((await signIn(s, "alices-long-password", from("10.8.1.1"))).statusCode).toBe(429);
  });

  it("forgets the addresses that only tried, never the ones it is slowing down (10,001 others failing once)", () => {
    const counter = new FailureCounter(10_000);
    const t = 1_000_000;
    for (let i = 0; i < 6; i++) counter.fail("192.0.2.10", t);
    for (let i = 0; i < 10_001; i++) counter.fail(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, t);
    expect(counter.wait("192.0.2.10", t + 1)).toBeGreaterThan(0);
    // The oldest of the one-time addresses went first.
    expect(counter.wait("10.0.0.0", t + 1)).toBe(0);
  });

  it("counts IPv6 clients by their /64, as one customer's network", () => {
    expect(addressKey("2001:db8:1:2:aaaa::1")).toBe(addressKey("2001:db8:1:2:ffff:1:2:3"));
    expect(addressKey("2001:db8:1:2::1")).not.toBe(addressKey("2001:db8:1:3::1"));
    expect(addressKey("::ffff:192.0.2.1")).toBe("192.0.2.1");
  });
});

describe("4. the rest of the review", () => {
  it("creates the SQLite database and its WAL readable by their owner only", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    for (const f of ["fleet.db", "fleet.db-wal", "fleet.db-shm"]) expect((statSync(join(s.data, f)).mode & 0o777).toString(8), f).toBe("600");
  });

  it("refuses a secret or token file that others can read", async () => {
    const s = await server();
    const file = join(s.data, "token");
    writeFileSync(file, "a-token-of-sufficient-length\n", { mode: 0o644 });
    expect(() => readTokenFile(file)).toThrow(/readable by others \(mode 0644\)/);
    const secret = join(s.data, "secret");
    writeFileSync(secret, `${Buffer.alloc(32, 1).toString("base64")}\n`, { mode: 0o640 });
    expect(() => loadOrCreateSecret(secret)).toThrow(/readable by others/);
  });

  it("answers malformed bodies and queries with 400 and a reason, never 500", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    const { manifest } = await standInRelease("demo", "2.0");
    const cases: [string, string, unknown, Record<string, string>?][] = [
      ["POST", "/api/v1/releases/demo/2.0", { ...manifest, files: [null] }],
      ["POST", "/api/v1/releases/demo/2.0", { ...manifest, files: [{ name: 123 }] }],
      ["GET", "/api/v1/devices?limit=1.5", undefined],
      ["GET", "/api/v1/devices?offset=1e20", undefined],
      ["GET", "/api/v1/devices?limit=-1&limit=2", undefined],
    ];
    for (const [method, url, payload] of cases) {
      const r = await s.app.inject({ method: method as "GET", url, headers: bearer, ...(payload !== undefined ? { payload: payload as object } : {}) });
      expect(r.statusCode, `${method} ${url}`).toBe(400);
      expect(r.json().error, url).toMatch(/^(body|querystring)\.[a-z0-9.]+: /);
    }
    // A form's blank fields are absent, not malformed.
    expect((await s.app.inject({ url: "/api/v1/devices?image=&health=&limit=", headers: bearer })).statusCode).toBe(200);
    // A JSON body on an upload.
    await s.app.inject({ method: "POST", url: "/api/v1/releases/demo/2.0", headers: bearer, payload: manifest });
    const put = await s.app.inject({
      method: "PUT",
      url: `/api/v1/releases/demo/2.0/${manifest.files[0]?.name}`,
      headers: { ...bearer, "content-type": "application/json" },
      payload: { not: "a file" },
    });
    expect(put.statusCode).toBe(400);
    expect(put.json().error).toMatch(/content-type/);
  });

  it("keeps a device's held index to the channel it was shown on", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "beta", "1.0");
    await s.publish("demo", "beta", "2.0");
    const d = `${s.url}/v1/%s/demo/x86-64/${hex(5)}/1.0/${hex(6)}/SHA256SUMS`;
    const stable = await (await fetch(d.replace("%s", "stable"))).text();
    const beta = await (await fetch(d.replace("%s", "beta"))).text();
    expect(stable).not.toMatch(/demo_2\.0\.efi/);
    expect(beta).toMatch(/demo_2\.0\.efi/);
  });

  it("keeps an automatic pause when the paused version is offered again", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0");
    await s.fleet.setRollout("demo", "stable", "2.0", { paused: true }, "health", "paused automatically: 3 of 3 devices rolled back");
    await s.fleet.promote("demo", "stable", "2.0", "token", { percent: 100 });
    const r = (await s.fleet.db.channel("demo", "stable"))?.rollouts.find((x) => x.version === "2.0");
    expect(r).toMatchObject({ paused: true, pauseReason: "paused automatically: 3 of 3 devices rolled back" });
  });
});
