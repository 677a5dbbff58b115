// The fleet server's behaviour, one suite run against both database backends: SQLite, and a real
// PostgreSQL server started for the run. Devices are simulated over HTTP, as the stock client and
// the report unit talk.
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, startTestServer, type TestServer } from "../../tests/support/fleet-server.js";
import { databaseEngines } from "../../tests/support/postgres.js";
import { SimulatedDevice } from "../../tests/support/simulated-device.js";
import { verifyDetached } from "../keys/update-key.js";
import { rolloutBucket } from "./rollout.js";

const { engines, fresh } = databaseEngines("fleet");
const servers: TestServer[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

describe.each(engines)("fleet on %s", (backend) => {
  let clock = Date.parse("2026-06-01T00:00:00Z");
  const now = () => clock;

  async function server(options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
    const database = await fresh(backend);
    const s = await startTestServer({ ...(database ? { database } : {}), now, ...options });
    servers.push(s);
    return s;
  }
  const devices = (s: TestServer, n: number, version = "1.0") =>
    Array.from({ length: n }, () => new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version, token: "" }));

  it("offers a staged release to the share of devices the percentage names, the same ones every time, more as it rises", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0", { percent: 25 });
    const fleet = devices(s, 200);
    const offered = async () => new Set((await Promise.all(fleet.map(async (d) => ((await d.poll()).offered ? d.machine : undefined)))).filter(Boolean));
    const at25 = await offered();
    const expected = fleet.filter((d) => rolloutBucket("demo", "2.0", d.machine) < 25).map((d) => d.machine);
    expect([...at25].sort()).toEqual(expected.sort());
    expect(at25.size).toBeGreaterThan(25);
    expect(at25.size).toBeLessThan(75);
    // Later checks pick the same devices (the view is held, and the choice is deterministic).
    clock += 10 * 60_000;
    expect([...(await offered())].sort()).toEqual([...at25].sort());
    await s.fleet.setRollout("demo", "stable", "2.0", { percent: 60 }, "op");
    clock += 10 * 60_000;
    const at60 = await offered();
    for (const m of at25) expect(at60.has(m)).toBe(true);
    expect(at60.size).toBeGreaterThan(at25.size);
    await s.fleet.setRollout("demo", "stable", "2.0", { percent: 100 }, "op");
    clock += 10 * 60_000;
    expect((await offered()).size).toBe(200);
  });

  it("signs every view: each device's index and signature match, across a rollout change in between", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0", { percent: 50 });
    const pub = readFileSync(s.key.publicKey, "utf8");
    const d = devices(s, 10);
    const base = (x: SimulatedDevice) => `${s.url}/v1/stable/demo/x86-64/${x.machine}/1.0/${x.bootId}`;
    const pairs = await Promise.all(
      d.map(async (x, i) => {
        const index = Buffer.from(await (await fetch(`${base(x)}/SHA256SUMS`)).arrayBuffer());
        if (i === 0) await s.fleet.setRollout("demo", "stable", "2.0", { percent: 100 }, "op");
        const sig = Buffer.from(await (await fetch(`${base(x)}/SHA256SUMS.gpg`)).arrayBuffer());
        return verifyDetached(pub, index, sig);
      }),
    );
    expect(pairs).toEqual(d.map(() => true));
  });

  it("pins a device or a group to a version, ahead of or behind the rollout", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0", { percent: 0 });
    const [a, b, c] = devices(s, 3);
    if (!a || !b || !c) throw new Error("no devices");
    await Promise.all([a, b, c].map((d) => d.poll()));
    expect((await a.poll()).offered).toBeUndefined();
    await s.fleet.pin("demo", "device", a.machine, "2.0", "op");
    await s.fleet.setGroup("demo", [b.machine], "lab", "op");
    await s.fleet.pin("demo", "group", "lab", "2.0", "op");
    clock += 10 * 60_000;
    expect((await a.poll()).offered).toBe("2.0");
    expect((await b.poll()).offered).toBe("2.0");
    expect((await c.poll()).offered).toBeUndefined();
    // A pinned device stays on its version when the channel moves on.
    await s.publish("demo", "stable", "3.0");
    clock += 10 * 60_000;
    expect((await a.poll()).offered).toBe("2.0");
    expect((await c.poll()).offered).toBe("3.0");
    await s.fleet.unpin("demo", "device", a.machine, "op");
    clock += 10 * 60_000;
    expect((await a.poll()).offered).toBe("3.0");
  });

  it("stops offering a paused release to devices that do not have it", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0");
    const [d] = devices(s, 1);
    await s.fleet.setRollout("demo", "stable", "2.0", { paused: true }, "op");
    expect((await d?.poll())?.offered).toBeUndefined();
    await s.fleet.setRollout("demo", "stable", "2.0", { paused: false }, "op");
    clock += 10 * 60_000;
    expect((await d?.poll())?.offered).toBe("2.0");
  });

  it("raises a scheduled rollout step by step", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0", { steps: [10, 50, 100], stepSeconds: 3600 });
    const percent = async () => (await s.fleet.db.channel("demo", "stable"))?.rollouts.find((r) => r.version === "2.0")?.percent;
    expect(await percent()).toBe(10);
    clock += 1800_000;
    await s.fleet.tick();
    expect(await percent()).toBe(10);
    clock += 1800_000;
    await s.fleet.tick();
    await s.fleet.tick(); // a second replica's tick at the same moment changes nothing
    expect(await percent()).toBe(50);
    clock += 3600_000;
    await s.fleet.tick();
    expect(await percent()).toBe(100);
    const changes = await s.fleet.db.rolloutChanges("demo", "stable", "2.0");
    expect(changes.map((c) => c.percent)).toEqual([10, 50, 100]);
  });

  it("pauses a rollout by itself when too many devices that took it roll back or report unhealthy", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    // Devices without tokens count once they proved it: known before the release, the whole UKI fetched.
    const fleet = Array.from({ length: 8 }, () => new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0" }));
    for (const d of fleet) await d.poll();
    clock += 60_000;
    await s.publish("demo", "stable", "2.0", { maxFailureRate: 0.3, minDevices: 4 });
    for (const d of fleet) expect(await d.update()).toBe("2.0");
    clock += 60_000;
    // Two boot it fine; three fail their tries and come back on 1.0 (a new boot id, the old version).
    for (const [i, d] of fleet.slice(0, 5).entries()) {
      d.reboot({ healthy: i < 2 });
      await d.poll();
    }
    const rollout = async () => (await s.fleet.db.channel("demo", "stable"))?.rollouts.find((r) => r.version === "2.0");
    expect((await rollout())?.paused).toBe(true);
    expect((await rollout())?.pauseReason).toMatch(/3 of 8 devices/);
    const stats = await s.fleet.db.releaseStats("demo", "2.0");
    expect(stats).toMatchObject({ adopters: 8, rolledBack: 3, running: 2 });
    // The devices that have not rebooted yet keep 2.0 installed; new devices are not offered it.
    const late = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0" });
    expect((await late.poll()).offered).toBeUndefined();
  });

  it("takes reports only with the device's own token (or the fleet token), and records what they say", async () => {
    const s = await server({ auth: { fleetToken: "fleet-wide-token-0123456789" } });
    await s.publish("demo", "stable", "1.0");
    const d = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0", token: "wrong-token" });
    expect(await d.report("boot")).toBe(401);
    const other = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0", token: s.tokenFor("demo", "f".repeat(32)) });
    expect(await other.report("boot")).toBe(401);
    const good = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0", token: "" });
    const own = new SimulatedDevice({
      server: s.url,
      image: "demo",
      channel: "stable",
      version: "1.0",
      machine: good.machine,
      token: s.tokenFor("demo", good.machine),
    });
    expect(await own.report("boot")).toBe(204);
    const shared = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0", token: "fleet-wide-token-0123456789" });
    expect(await shared.report("unhealthy", { reason: "sshd down" })).toBe(204);
    const bad = await fetch(`${s.url}/v1/stable/demo/x86-64/${own.machine}/report`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${s.tokenFor("demo", own.machine)}` },
      body: JSON.stringify({ event: "boot", version: "1.0; rm -rf /" }),
    });
    expect(bad.status).toBe(400);
    const rec = await s.fleet.db.device("demo", own.machine);
    expect(rec).toMatchObject({ bootedVersion: "1.0", healthy: true, bootId: own.bootId });
    expect(rec?.report?.blessed).toBe("good");
    expect((await s.fleet.db.device("demo", shared.machine))?.healthy).toBe(false);
    const events = await s.fleet.db.events({ image: "demo", kinds: ["report"] });
    expect(events).toHaveLength(2);
  });

  it("learns first and last contact, reboots, downloads and rollbacks from polls alone", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0");
    const d = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0" });
    const first = clock;
    await d.poll();
    clock += 60_000;
    expect(await d.update()).toBe("2.0");
    clock += 60_000;
    d.reboot({ healthy: false });
    await d.poll();
    const rec = await s.fleet.db.device("demo", d.machine);
    expect(rec).toMatchObject({ firstSeen: first, lastSeen: clock, reboots: 1, bootedVersion: "1.0", downloadedVersion: "2.0", rolledBack: ["2.0"] });
    const kinds = (await s.fleet.db.events({ image: "demo", machine: d.machine })).map((e) => e.kind);
    expect(kinds).toEqual(expect.arrayContaining(["seen", "download", "downloaded", "boot", "rollback"]));
  });

  it("flags a machine-id that two machines share", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    const a = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0" });
    const b = new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version: "1.0", machine: a.machine });
    await a.poll();
    clock += 60_000;
    await a.poll();
    expect((await s.fleet.db.device("demo", a.machine))?.duplicate).toBe(false);
    await b.poll();
    clock += 60_000;
    await a.poll();
    expect((await s.fleet.db.device("demo", a.machine))?.duplicate).toBe(true);
    expect((await s.fleet.db.devices({ image: "demo", duplicate: true })).total).toBe(1);
  });

  it("serves metrics and the API only to operators", async () => {
    const s = await server();
    await s.publish("demo", "stable", "1.0");
    await s.publish("demo", "stable", "2.0", { percent: 30 });
    await Promise.all(devices(s, 5).map((d) => d.poll()));
    expect((await fetch(`${s.url}/metrics`)).status).toBe(401);
    const text = await (await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` } })).text();
    expect(text).toMatch(/^basalt_devices\{image="demo",version="1\.0"\} 5$/m);
    expect(text).toMatch(/^basalt_rollout_percent\{image="demo",channel="stable",version="2\.0"\} 30$/m);
    const list = await (await fetch(`${s.url}/api/v1/devices?image=demo&version=1.0`, { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` } })).json();
    expect(list.total).toBe(5);
  });
});
