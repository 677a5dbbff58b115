// The fleet server's behaviour, one suite run against both database backends: SQLite, and a real
// PostgreSQL server started for the run. Devices are simulated over HTTP, as the stock client and
// the report unit talk.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { databaseEngines } from "../../tests/support/database-engines.js";
import { OPERATOR_TOKEN, startTestServer, type TestServer } from "../../tests/support/fleet-server.js";
import { SimulatedDevice } from "../../tests/support/simulated-device.js";
import { verifyDetached } from "../keys/update-signature.js";

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
    // Machine-ids sha256("basalt-test-device-<i>")[:32]. Which of them are in at 25 % and 60 % was
    // computed once outside this code (Python's hashlib: sha256("basalt-rollout\0demo\02.0\0<id>"),
    // first four bytes big-endian over 2^32), so the test does not check the code with itself.
    const IN_AT_25 = [
      2, 7, 10, 12, 17, 21, 24, 34, 38, 47, 53, 57, 58, 65, 71, 76, 80, 99, 102, 108, 110, 113, 117, 125, 131, 132, 141, 144, 147, 156, 161, 165, 170, 172, 177,
      179, 181, 188, 190, 192, 193,
    ];
    const IN_AT_60 = [
      2, 5, 6, 7, 10, 11, 12, 14, 15, 16, 17, 21, 23, 24, 25, 27, 28, 29, 32, 34, 36, 38, 39, 46, 47, 49, 50, 53, 55, 56, 57, 58, 59, 65, 68, 69, 70, 71, 72,
      73, 75, 76, 80, 82, 83, 85, 87, 88, 90, 93, 96, 98, 99, 100, 101, 102, 103, 104, 107, 108, 109, 110, 113, 116, 117, 118, 120, 123, 124, 125, 126, 129,
      131, 132, 133, 134, 137, 139, 140, 141, 144, 145, 147, 149, 152, 155, 156, 157, 159, 160, 161, 162, 164, 165, 167, 169, 170, 171, 172, 173, 174, 176, 177,
      178, 179, 180, 181, 185, 187, 188, 189, 190, 192, 193, 194, 195, 197,
    ];
    const fleet = Array.from(
      { length: 200 },
      (_, i) =>
        new SimulatedDevice({
          server: s.url,
          image: "demo",
          channel: "stable",
          version: "1.0",
          machine: createHash("sha256").update(`basalt-test-device-${i}`).digest("hex").slice(0, 32),
        }),
    );
    const offered = async () => (await Promise.all(fleet.map(async (d, i) => ((await d.poll()).offered ? i : -1)))).filter((i) => i >= 0);
    expect(await offered()).toEqual(IN_AT_25);
    // Later checks pick the same devices (the view is held, and the choice is deterministic).
    clock += 10 * 60_000;
    expect(await offered()).toEqual(IN_AT_25);
    await s.fleet.setRollout("demo", "stable", "2.0", { percent: 60 }, "op");
    clock += 10 * 60_000;
    expect(await offered()).toEqual(IN_AT_60);
    await s.fleet.setRollout("demo", "stable", "2.0", { percent: 100 }, "op");
    clock += 10 * 60_000;
    expect((await offered()).length).toBe(200);
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
