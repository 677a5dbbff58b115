// Authorization belongs to the route: every route the server registers is walked (from its own route
// table, not a list written here) and every route that needs credentials is sent without them, in
// every spelling of its URL an attacker might try, over a real socket. None may answer with anything
// but a refusal, and nothing in the database or the artifact store may change.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import Fastify from "fastify";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, startTestServer, type TestServer } from "../../tests/support/fleet-server.js";
import { rawRequest } from "../../tests/support/raw-http.js";
import { fillRoute, MACHINE } from "../../tests/support/route-samples.js";
import { registerAccess } from "./access.js";
import { hashPassword } from "./auth.js";

const pct = (c: string) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`;

/** The ways one path can be written that a router might still take for it. */
function spellings(path: string): string[] {
  const segments = path.split("/").slice(1);
  const head = segments[0] ?? "";
  const tail = segments.slice(1).join("/");
  return [
    path,
    `/${pct(head[0] ?? "a")}${head.slice(1)}/${tail}`,
    path.replace(/[a-z]/g, pct),
    `/${head}%2f${tail.replaceAll("/", "%2F")}`,
    `/${head}%2F${tail}`,
    path.replaceAll("/", "//"),
    `//${path.slice(1)}`,
    `/x/..${path}`,
    `/${head}/./${tail}`,
    `/${head}/x/../${tail}`,
    `/${head}/%2e/${tail}`,
    `/x/%2e%2e${path}`,
    path.toUpperCase(),
    `/${head[0]?.toUpperCase() ?? ""}${head.slice(1)}/${tail}`,
    `${path}/`,
    `${path}//`,
    `/${head};x=1/${tail}`,
    `${path};x=1`,
    `${path}?`,
    `${path}#frag`,
    `${path}%00`,
    `${path}%20`,
    `http://basalt.test${path}`,
    `HTTP://BASALT.TEST:8080${path}`,
    `https://attacker.example${path}`,
    `http://basalt.test/%2e%2e${path}`,
    `http://basalt.test/${pct(head[0] ?? "a")}${head.slice(1)}/${tail}`,
  ];
}

let s: TestServer;
let port: number;

/** Everything a request could have changed: every table's rows and every file below the data directory. */
async function fleetState(): Promise<string> {
  const tables = [
    "releases",
    "release_files",
    "uploads",
    "release_indexes",
    "channels",
    "rollouts",
    "rollout_changes",
    "pins",
    "devices",
    "device_events",
    "audit",
    "sessions",
  ];
  const counts: Record<string, unknown> = {};
  for (const t of tables) counts[t] = (await sql`SELECT * FROM ${sql.table(t)}`.execute(s.fleet.db.kysely)).rows;
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (!e.startsWith("fleet.db")) files.push(`${p}:${statSync(p).size}`);
    }
  };
  walk(s.data);
  return JSON.stringify({ counts, files: files.sort() });
}

beforeAll(async () => {
  s = await startTestServer({ auth: { operators: [{ name: "alice", hash: hashPassword("alices-long-password") }] } });
  port = Number(new URL(s.url).port);
  await s.publish("demo", "stable", "1.0");
  await s.release("demo", "2.0");
  // A device the routes can find, and an upload in progress a commit could finish.
  await s.fleet.view({ channel: "stable", image: "demo", arch: "x86-64", machine: MACHINE, booted: "1.0" });
}, 60_000);
afterAll(async () => {
  await s?.close();
});

describe("authorization after routing", () => {
  it("has every route declare who may call it: a route without a declaration cannot be registered", async () => {
    const app = Fastify();
    registerAccess(app, { auth: {} as never, sessions: {} as never });
    expect(() => app.get("/api/v1/secret", async () => "x")).toThrow(/must declare who may call it/);
    await app.close();
  });

  it("refuses every operator, dashboard and report route without credentials, however its URL is spelled, and changes nothing", async () => {
    const guarded = s.app.routeTable.filter((r) => r.access === "operator" || r.access === "dashboard" || r.access === "device-report");
    // The table is the server's own: it must hold the API, the dashboard and the device report.
    expect(guarded.filter((r) => r.url.startsWith("/api/v1/")).length).toBeGreaterThanOrEqual(18);
    expect(guarded.filter((r) => r.url.startsWith("/ui/")).length).toBeGreaterThanOrEqual(12);
    expect(guarded.some((r) => r.access === "device-report")).toBe(true);
    expect(guarded.some((r) => r.url === "/metrics")).toBe(true);
    const before = await fleetState();
    const answers: string[] = [];
    for (const route of guarded) {
      const path = fillRoute(route.url);
      const body =
        route.method === "GET" || route.method === "HEAD" ? undefined : JSON.stringify({ id: "demo", version: "2.0", percent: 100, machines: [MACHINE] });
      for (const target of spellings(path)) {
        const r = await rawRequest({ port, method: route.method, target, ...(body ? { body, headers: { "content-type": "application/json" } } : {}) });
        answers.push(`${route.method} ${target} -> ${r.status}`);
        // Routed to the guarded route: a refusal (401, or the dashboard's redirect to sign in); not
        // routed at all: 404 or a malformed request. Never an answer from a handler.
        expect([303, 400, 401, 404, 405], `${route.method} ${target}`).toContain(r.status);
        if (r.status === 303) expect(r.head, `${route.method} ${target}`).toMatch(/\r\nlocation: \/ui\/login/i);
      }
      // The spellings a router does take for the route itself must reach its refusal.
      for (const target of [path, `/${pct(path[1] ?? "a")}${path.slice(2)}`, `http://basalt.test${path}`]) {
        const r = await rawRequest({ port, method: route.method, target, ...(body ? { body, headers: { "content-type": "application/json" } } : {}) });
        const refusal = route.access === "dashboard" && (route.method === "GET" || route.method === "HEAD") ? 303 : 401;
        expect(r.status, `${route.method} ${target}`).toBe(refusal);
      }
    }
    expect(answers.length).toBeGreaterThan(500);
    expect(await fleetState()).toBe(before);
  }, 120_000);

  it("logs every refused operator attempt with the peer and the route", async () => {
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    });
    const logged = await startTestServer({ logger: { level: "warn", stream } });
    try {
      await logged.app.inject({ url: "/%61pi/v1/audit", remoteAddress: "198.51.100.23" });
      await logged.app.inject({
        method: "POST",
        url: "/api/v1/channels/stable/promote",
        remoteAddress: "198.51.100.24",
        headers: { authorization: "Bearer guess-guess-guess" },
      });
      const refusals = lines.filter((l) => l.msg === "operator access refused");
      expect(refusals).toEqual([
        expect.objectContaining({ peer: "198.51.100.23", method: "GET", route: "/api/v1/audit", status: 401 }),
        // A bearer sent in clear text from another host is refused before it is even compared.
        expect.objectContaining({ peer: "198.51.100.24", method: "POST", route: "/api/v1/channels/:channel/promote", status: 403 }),
      ]);
    } finally {
      await logged.close();
    }
  });

  it("lets the operator token through the same routes (the walk above is not refusing everything)", async () => {
    const r = await rawRequest({ port, method: "GET", target: `http://basalt.test/%61pi/v1/audit`, headers: { authorization: `Bearer ${OPERATOR_TOKEN}` } });
    expect(r.status).toBe(200);
    const wrong = await rawRequest({ port, method: "GET", target: "/api/v1/audit", headers: { authorization: "Bearer not-the-token-at-all" } });
    expect(wrong.status).toBe(401);
    expect(wrong.body).toMatch(/operator token is wrong/);
  });
});
