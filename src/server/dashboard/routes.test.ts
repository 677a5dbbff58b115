// The dashboard over HTTP (Fastify inject, plus simulated devices over a real socket): sign-in,
// what needs a session and a CSRF token, what the forms change in the fleet, and that nothing a
// device or an operator typed reaches a page unescaped.
import { createHash } from "node:crypto";
import type { LightMyRequestResponse } from "fastify";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, startTestServer, type TestServer } from "../../../tests/support/fleet-server.js";
import { SimulatedDevice } from "../../../tests/support/simulated-device.js";
import { hashPassword, type Operator } from "../auth.js";
import { SESSION_COOKIE } from "../sessions.js";

const PASSWORD = "alices-long-password";
let operators: Operator[];
const servers: TestServer[] = [];

beforeAll(() => {
  operators = [{ name: "alice", hash: hashPassword(PASSWORD) }];
});
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function server(): Promise<TestServer> {
  const s = await startTestServer({ auth: { operators } });
  servers.push(s);
  await s.publish("demo", "stable", "1.0");
  await s.publish("demo", "stable", "2.0", { percent: 10 });
  return s;
}

const form = (fields: Record<string, string | string[]>) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) for (const x of Array.isArray(v) ? v : [v]) q.append(k, x);
  return q.toString();
};
const cookieOf = (r: LightMyRequestResponse, name: string) => r.cookies.find((c) => c.name === name);

/** A browser's worth of state: its cookies, and the CSRF token of the last page it read. */
class Client {
  cookies: Record<string, string> = {};
  csrf = "";
  constructor(private readonly s: TestServer) {}

  private keep(r: LightMyRequestResponse): LightMyRequestResponse {
    for (const c of r.cookies) {
      if (c.value === "" || (c.maxAge !== undefined && c.maxAge <= 0) || (c.expires && c.expires.getTime() < Date.now())) delete this.cookies[c.name];
      else this.cookies[c.name] = c.value;
    }
    const token = /name="csrf" value="([^"]+)"/.exec(r.body)?.[1];
    if (token) this.csrf = token;
    return r;
  }

  async get(url: string): Promise<LightMyRequestResponse> {
    return this.keep(await this.s.app.inject({ method: "GET", url, cookies: this.cookies }));
  }

  async post(url: string, fields: Record<string, string | string[]>, o: { csrf?: boolean } = {}): Promise<LightMyRequestResponse> {
    const payload = form(o.csrf === false ? fields : { csrf: this.csrf, ...fields });
    return this.keep(
      await this.s.app.inject({ method: "POST", url, cookies: this.cookies, payload, headers: { "content-type": "application/x-www-form-urlencoded" } }),
    );
  }

  /** Follows a redirect the way a browser does after a form: GET the location. */
  async follow(r: LightMyRequestResponse): Promise<LightMyRequestResponse> {
    expect(r.statusCode, r.body).toBe(303);
    return this.get(String(r.headers.location));
  }

  async signIn(name = "alice", password = PASSWORD, next?: string): Promise<LightMyRequestResponse> {
    const page = await this.get(`/ui/login${next ? `?next=${encodeURIComponent(next)}` : ""}`);
    const hidden = /name="next" value="([^"]*)"/.exec(page.body)?.[1] ?? "";
    // The sign-in form's CSRF token (bound to no session yet) came with the page.
    return this.post("/ui/login", { name, password, next: hidden.replaceAll("&#39;", "'").replaceAll("&amp;", "&") });
  }
}

async function signedIn(s: TestServer): Promise<Client> {
  const c = new Client(s);
  const r = await c.signIn();
  expect(r.statusCode, r.body).toBe(303);
  await c.get("/ui/");
  expect(c.csrf).not.toBe("");
  return c;
}

const rollout = async (s: TestServer, version = "2.0", channel = "stable") =>
  (await s.fleet.db.channel("demo", channel))?.rollouts.find((r) => r.version === version);

const deviceFor = (s: TestServer, i: number, version = "1.0") => {
  const machine = createHash("sha256").update(`routes-test-${i}`).digest("hex").slice(0, 32);
  return new SimulatedDevice({ server: s.url, image: "demo", channel: "stable", version, machine, token: s.tokenFor("demo", machine) });
};

describe("dashboard sign-in", () => {
  it("sends every page but the sign-in form to it without a session, and refuses changes", async () => {
    const s = await server();
    const c = new Client(s);
    const root = await c.get("/");
    expect(root.statusCode).toBe(302);
    expect(root.headers.location).toBe("/ui/");
    for (const url of [
      "/ui/",
      "/ui/devices?health=unhealthy",
      "/ui/releases",
      "/ui/audit",
      "/ui/rollouts/demo/stable/2.0",
      "/ui/rollouts/demo/stable/2.0/chart",
    ]) {
      const r = await c.get(url);
      expect(r.statusCode, url).toBe(303);
      expect(new URL(String(r.headers.location), "http://x").pathname).toBe("/ui/login");
      expect(new URL(String(r.headers.location), "http://x").searchParams.get("next")).toBe(url);
    }
    const post = await c.post("/ui/rollouts/demo/stable/2.0", { percent: "100" }, { csrf: false });
    expect(post.statusCode).toBe(401);
    expect((await rollout(s))?.percent).toBe(10);
    // A forged session cookie is no session.
    c.cookies[SESSION_COOKIE] = "eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OTk5OX0.forged";
    expect((await c.get("/ui/")).statusCode).toBe(303);
  });

  it("refuses a wrong password or an unknown name, and a form without its CSRF token", async () => {
    const s = await server();
    const c = new Client(s);
    for (const [name, password] of [
      ["alice", "wrong-password-123"],
      ["mallory", PASSWORD],
      ["alice", ""],
    ] as const) {
      const r = await c.signIn(name, password);
      expect(r.statusCode).toBe(401);
      expect(r.body).toContain("Wrong name or password");
      expect(cookieOf(r, SESSION_COOKIE)).toBeUndefined();
    }
    const noToken = await s.app.inject({
      method: "POST",
      url: "/ui/login",
      payload: form({ name: "alice", password: PASSWORD }),
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect(noToken.statusCode).toBe(403);
    expect(cookieOf(noToken, SESSION_COOKIE)).toBeUndefined();
    expect((await c.get("/ui/")).statusCode).toBe(303);
  });

  it("signs in with a password (or the operator token) into an HttpOnly, SameSite=Strict session, and back to the page asked for", async () => {
    const s = await server();
    const c = new Client(s);
    const r = await c.signIn("alice", PASSWORD, "/ui/devices?health=unhealthy");
    expect(r.statusCode).toBe(303);
    expect(r.headers.location).toBe("/ui/devices?health=unhealthy");
    const session = cookieOf(r, SESSION_COOKIE);
    expect(session).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/" });
    const home = await c.get("/ui/");
    expect(home.statusCode).toBe(200);
    expect(home.body).toContain('<strong class="operator">alice</strong>');
    expect((await s.fleet.db.auditLog()).find((e) => e.action === "sign-in")?.actor).toBe("alice");

    // Only pages of the dashboard are places to go back to.
    const other = new Client(s);
    expect((await other.signIn("alice", PASSWORD, "//evil.example/ui/")).headers.location).toBe("/ui/");
    const byToken = new Client(s);
    expect((await byToken.signIn("ops", OPERATOR_TOKEN)).statusCode).toBe(303);
    expect((await byToken.get("/ui/")).body).toContain('<strong class="operator">ops (token)</strong>');
  });

  it("signs out only with the CSRF token", async () => {
    const s = await server();
    const c = await signedIn(s);
    expect((await c.post("/ui/logout", {}, { csrf: false })).statusCode).toBe(403);
    expect((await c.get("/ui/")).statusCode).toBe(200);
    const out = await c.post("/ui/logout", {});
    expect(out.statusCode).toBe(303);
    expect(out.headers.location).toBe("/ui/login");
    expect((await c.get("/ui/")).statusCode).toBe(303);
  });
});

describe("dashboard actions", () => {
  it("refuses a change without the session's CSRF token and changes nothing", async () => {
    const s = await server();
    const c = await signedIn(s);
    const missing = await c.post("/ui/rollouts/demo/stable/2.0", { percent: "100" }, { csrf: false });
    expect(missing.statusCode).toBe(403);
    expect(missing.body).toContain("nothing was changed");
    const wrong = await c.post("/ui/rollouts/demo/stable/2.0", { percent: "100", csrf: "x".repeat(32) }, { csrf: false });
    expect(wrong.statusCode).toBe(403);
    // Another operator's token does not fit this session.
    const other = new Client(s);
    await other.signIn("ops", OPERATOR_TOKEN);
    await other.get("/ui/");
    expect(other.csrf).not.toBe(c.csrf);
    expect((await c.post("/ui/rollouts/demo/stable/2.0", { percent: "100", csrf: other.csrf }, { csrf: false })).statusCode).toBe(403);
    for (const [url, fields] of [
      ["/ui/releases/demo/2.0/promote", { channel: "beta", percent: "100" }],
      ["/ui/pins", { image: "demo", group: "lab", version: "1.0" }],
      ["/ui/devices/group", { device: `demo/${"a".repeat(32)}`, group: "lab" }],
    ] as const) {
      expect((await c.post(url, fields, { csrf: false })).statusCode, url).toBe(403);
    }
    expect((await rollout(s))?.percent).toBe(10);
    expect(await s.fleet.db.channel("demo", "beta")).toBeUndefined();
    expect(await s.fleet.db.pins()).toEqual([]);
    expect((await s.fleet.db.auditLog()).filter((e) => e.action !== "sign-in").map((e) => e.actor)).toEqual(["test", "test", "test", "test"]);
  });

  it("raises, pauses, resumes, schedules and sets the failure policy of a rollout, then shows what it did", async () => {
    const s = await server();
    const c = await signedIn(s);
    const url = "/ui/rollouts/demo/stable/2.0";
    const page = await c.follow(await c.post(url, { percent: "50" }));
    expect((await rollout(s))?.percent).toBe(50);
    expect(page.body).toContain('class="flash ok"');
    expect(page.body).toContain("demo 2.0 on stable: offered to 50%.");
    expect(page.body).toContain('data-offered="50"');
    // The flash is shown once.
    expect((await c.get(url)).body).not.toContain('class="flash ok"');

    await c.follow(await c.post(url, { percent: "25" }));
    expect((await rollout(s))?.percent).toBe(25);
    await c.follow(await c.post(url, { paused: "true", reason: "checking the failures" }));
    expect(await rollout(s)).toMatchObject({ paused: true, pauseReason: "checking the failures" });
    const resumed = await c.follow(await c.post(url, { paused: "false" }));
    expect(await rollout(s)).toMatchObject({ paused: false, pauseReason: null });
    expect(resumed.body).toContain("resumed");
    await c.follow(await c.post(url, { steps: "30,60,100", stepSeconds: "600" }));
    const scheduled = await rollout(s);
    expect(scheduled).toMatchObject({ steps: [30, 60, 100], stepSeconds: 600, percent: 25 });
    expect(scheduled?.nextStepAt).toBeGreaterThan(Date.now());
    await c.follow(await c.post(url, { maxFailurePercent: "35", minDevices: "5" }));
    expect(await rollout(s)).toMatchObject({ maxFailureRate: 0.35, minDevices: 5 });

    const changes = await s.fleet.db.rolloutChanges("demo", "stable", "2.0");
    expect(changes.map((x) => [x.actor, x.percent, x.paused])).toEqual([
      ["test", 10, false],
      ["alice", 50, false],
      ["alice", 25, false],
      ["alice", 25, true],
      ["alice", 25, false],
      ["alice", 25, false],
      ["alice", 25, false],
    ]);
    const shown = await c.get(url);
    expect(shown.body).toContain("checking the failures");
    expect(shown.body).toMatch(/next step to 30%/);
  });

  it("shows the Fleet's refusal in the page and changes nothing", async () => {
    const s = await server();
    const c = await signedIn(s);
    const url = "/ui/rollouts/demo/stable/2.0";
    for (const [fields, message] of [
      [{ percent: "150" }, "rollout.percent: expected a percentage from 0 to 100"],
      [{ percent: "lots" }, "percent: not a number"],
      [{ steps: "50,10", stepSeconds: "60" }, "rollout.steps: expected rising percentages above 0"],
      [{}, "nothing to change"],
    ] as const) {
      const page = await c.follow(await c.post(url, fields));
      expect(page.statusCode).toBe(200);
      expect(page.body).toContain('class="flash error"');
      expect(page.body).toContain(message);
      expect(page.body).not.toMatch(/at .*\.ts:\d+/);
    }
    expect(await rollout(s)).toMatchObject({ percent: 10, steps: null, paused: false });
    const missing = await c.get("/ui/rollouts/demo/stable/9.9");
    expect(missing.statusCode).toBe(404);
    expect(missing.body).toContain("demo 9.9 is not offered on stable.");
  });

  it("offers a release on a channel from the releases page, pins and unpins, and sets groups", async () => {
    const s = await server();
    await s.release("demo", "3.0");
    const c = await signedIn(s);
    const page = (await c.get("/ui/releases")).body;
    expect(page).toContain('data-version="3.0"');
    // Which key signed its indexes (the last 16 digits of the fingerprint, the whole on hover).
    const fingerprint = (await s.fleet.db.release("demo", "3.0"))?.signingKey as string;
    expect(page).toContain(`<span class="mono" title="${fingerprint}">${fingerprint.slice(-16)}</span>`);
    const promoted = await c.post("/ui/releases/demo/3.0/promote", { channel: "beta", percent: "20", steps: "20,100", stepSeconds: "3600" });
    expect(promoted.headers.location).toBe("/ui/rollouts/demo/beta/3.0");
    expect((await c.follow(promoted)).body).toContain("demo 3.0 offered on beta to 20% of its devices.");
    expect(await rollout(s, "3.0", "beta")).toMatchObject({ percent: 20, steps: [20, 100], stepSeconds: 3600 });
    const refused = await c.follow(await c.post("/ui/releases/demo/4.0/promote", { channel: "beta", percent: "20" }));
    expect(refused.body).toContain("demo 4.0 has not been published");

    const devices = [deviceFor(s, 1), deviceFor(s, 2), deviceFor(s, 3)];
    for (const d of devices) await d.poll();
    const [a, b, d3] = devices as [SimulatedDevice, SimulatedDevice, SimulatedDevice];
    const base = `/ui/devices/demo/${a.machine}`;
    await c.follow(await c.post(`${base}/pin`, { version: "1.0" }));
    expect((await s.fleet.db.pins("demo")).map((p) => [p.scope, p.target, p.version, p.actor])).toEqual([["device", a.machine, "1.0", "alice"]]);
    await c.follow(await c.post(`${base}/group`, { group: "lab" }));
    expect((await s.fleet.db.device("demo", a.machine))?.group).toBe("lab");
    const unpinned = await c.follow(await c.post("/ui/pins/unpin", { image: "demo", scope: "device", target: a.machine }));
    expect(unpinned.body).toContain(`Unpinned device ${a.machine}.`);
    expect(await s.fleet.db.pins()).toEqual([]);

    const bulk = await c.follow(
      await c.post("/ui/devices/group", { device: [`demo/${b.machine}`, `demo/${d3.machine}`], group: "edge", query: "?group=edge" }),
    );
    expect(bulk.body).toContain("2 devices now in group edge.");
    expect(bulk.body).toContain('<small class="device-count">2 devices</small>');
    expect((await s.fleet.db.devices({ group: "edge" })).devices.map((x) => x.machine).sort()).toEqual([b.machine, d3.machine].sort());

    await c.follow(await c.post("/ui/pins", { image: "demo", group: "edge", version: "1.0" }));
    expect((await s.fleet.db.pins()).map((p) => [p.scope, p.target])).toEqual([["group", "edge"]]);
    expect((await c.get(`/ui/devices/demo/${b.machine}`)).body).toContain("(group edge)");
  });
});

describe("dashboard pages", () => {
  it("escapes whatever devices and operators typed: report reasons, group names, pause reasons, searches", async () => {
    const s = await server();
    const c = await signedIn(s);
    const d = deviceFor(s, 7);
    await d.poll();
    expect(await d.report("unhealthy", { reason: "<script>alert('device')</script>" })).toBe(204);

    const device = await c.get(`/ui/devices/demo/${d.machine}`);
    expect(device.body).toContain("&lt;script&gt;alert(&#39;device&#39;)&lt;/script&gt;");
    expect(device.body).not.toContain("<script>alert");
    const group = await c.follow(await c.post(`/ui/devices/demo/${d.machine}/group`, { group: '<img src=x onerror="alert(1)">' }));
    expect(group.body).toContain('class="flash error"');
    expect(group.body).toContain("group &quot;&lt;img src=x onerror=\\&quot;alert(1)\\&quot;&gt;&quot;: expected a group name");
    expect(group.body).not.toContain("<img src=x");
    expect((await s.fleet.db.device("demo", d.machine))?.group).toBeNull();

    await c.follow(await c.post("/ui/rollouts/demo/stable/2.0", { paused: "true", reason: "</td><script>alert(2)</script>" }));
    const search = await c.get(`/ui/devices?q=${encodeURIComponent('"><script>alert(3)</script>')}`);
    for (const page of [device, group, search, await c.get("/ui/rollouts/demo/stable/2.0"), await c.get("/ui/audit"), await c.get("/ui/")]) {
      // The page's own script is the only one.
      expect(page.body.match(/<script/g)).toHaveLength(1);
      expect(page.body).not.toMatch(/<img src=x|<\/td><script/);
    }
    expect((await c.get("/ui/audit")).body).toContain("&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;");
    expect(search.body).toContain('value="&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;"');
  });

  it("allows only its own inline script and stylesheet", async () => {
    const s = await server();
    const c = await signedIn(s);
    const page = await c.get("/ui/");
    const csp = String(page.headers["content-security-policy"]);
    const sha = (text: string) => `'sha256-${createHash("sha256").update(text).digest("base64")}'`;
    const script = /<script>([\s\S]*?)<\/script>/.exec(page.body)?.[1] ?? "";
    const style = /<style>([\s\S]*?)<\/style>/.exec(page.body)?.[1] ?? "";
    expect(csp).toContain(`script-src ${sha(script)}`);
    expect(csp).toContain(`style-src ${sha(style)}`);
    expect(csp).toContain("default-src 'none'");
    expect(page.headers["x-frame-options"]).toBe("DENY");
    expect(page.body).not.toMatch(/ style="/);
  });

  it("shows the fleet: counts per version on the overview, devices with filters and paging, and a chart that follows the devices", async () => {
    const s = await server();
    const c = await signedIn(s);
    await s.fleet.setRollout("demo", "stable", "2.0", { percent: 100 }, "op");
    const fleet = Array.from({ length: 6 }, (_, i) => deviceFor(s, 100 + i));
    const chart = async () => {
      const r = await c.get("/ui/rollouts/demo/stable/2.0/chart");
      expect(r.statusCode).toBe(200);
      const svg = /<svg class="chart"[^>]*>/.exec(r.body)?.[0] ?? "";
      return Object.fromEntries([...svg.matchAll(/data-([a-z]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    };
    for (const d of fleet) await d.poll();
    expect(await chart()).toMatchObject({ offered: "100", downloaded: "0", running: "0", failed: "0", population: "6" });
    // Four update: three boot it, one falls back to 1.0.
    for (const d of fleet.slice(0, 4)) expect(await d.update()).toBe("2.0");
    for (const [i, d] of fleet.slice(0, 4).entries()) {
      d.reboot({ healthy: i < 3 });
      await d.poll();
      await d.report("boot", i < 3 ? {} : { entries: ["demo_2.0+0-3.efi", "demo_1.0.efi"] });
    }
    expect(await chart()).toMatchObject({ downloaded: "67", running: "50", failed: "17", population: "6" });

    const overview = (await c.get("/ui/")).body;
    expect(overview).toMatch(/<dt>devices<\/dt><dd><a [^>]*>6<\/a>/);
    expect(overview).toMatch(/<dt>rolled back<\/dt><dd><a [^>]*>1<\/a>/);
    expect(overview).toContain('href="/ui/rollouts/demo/stable/2.0"');

    const all = await c.get("/ui/devices");
    expect(all.body).toContain('<small class="device-count">6 devices</small>');
    expect(all.body.match(/<tr class="device"/g)).toHaveLength(6);
    const onTwo = await c.get("/ui/devices?version=2.0");
    expect(onTwo.body).toContain('<small class="device-count">3 devices</small>');
    const back = await c.get("/ui/devices?rolled_back=1");
    expect(back.body).toContain('<small class="device-count">1 device</small>');
    expect(back.body).toContain((fleet[3] as SimulatedDevice).machine);
    const paged = await c.get("/ui/devices?limit=4&offset=4");
    expect(paged.body.match(/<tr class="device"/g)).toHaveLength(2);
    expect(paged.body).toContain("5–6 of 6");
    expect(paged.body).toContain('href="/ui/devices?limit=4"');
    const first = await c.get("/ui/devices?limit=4");
    expect(first.body).toContain('href="/ui/devices?limit=4&amp;offset=4"');
    expect((await c.get(`/ui/devices/demo/${"0".repeat(32)}`)).statusCode).toBe(404);
  });
});
