// Dashboard sessions live on the server: signing out, signing out everywhere, removing an operator
// (or changing their password, or the token) ends them at once, and every sign-in gets a new id.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LightMyRequestResponse } from "fastify";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, startTestServer, type TestServer } from "../../tests/support/fleet-server.js";
import { credentialFiles, hashPassword } from "./auth.js";
import { SESSION_COOKIE } from "./sessions.js";

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

let aliceHash: string;
let bobHash: string;
beforeAll(() => {
  aliceHash = hashPassword("alices-long-password");
  bobHash = hashPassword("bobs-long-password");
});

/** A server whose operators file and token file can be edited while it runs. */
async function server() {
  const dir = mkdtempSync(join(tmpdir(), "basalt-sessions-"));
  const operatorsFile = join(dir, "operators");
  const tokenFile = join(dir, "token");
  const write = (ops: string[], token = OPERATOR_TOKEN) => {
    writeFileSync(operatorsFile, `${ops.join("\n")}\n`, { mode: 0o600 });
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  };
  write([`alice:${aliceHash}`, `bob:${bobHash}`]);
  const s = await startTestServer({ credentials: credentialFiles({ operatorsFile, tokenFile, checkMs: 0 }) });
  servers.push(s);
  return { s, write };
}

/** One browser: its cookies, and the CSRF token of the last page it read. */
async function browser(s: TestServer, name: string, password: string) {
  let cookies: Record<string, string> = {};
  let csrf = "";
  const keep = (r: LightMyRequestResponse) => {
    for (const c of r.cookies) {
      if (c.value === "" || (c.maxAge !== undefined && c.maxAge <= 0)) delete cookies[c.name];
      else cookies[c.name] = c.value;
    }
    csrf = /name="csrf" value="([^"]+)"/.exec(r.body)?.[1] ?? csrf;
    return r;
  };
  const get = async (url: string) => keep(await s.app.inject({ url, cookies }));
  const post = async (url: string, fields: Record<string, string> = {}) =>
    keep(
      await s.app.inject({
        method: "POST",
        url,
        cookies,
        headers: { "content-type": "application/x-www-form-urlencoded" },
        payload: new URLSearchParams({ csrf, ...fields }).toString(),
      }),
    );
  await get("/ui/login");
  const before = cookies[SESSION_COOKIE];
  const r = await post("/ui/login", { name, password, next: "/ui/" });
  expect(r.statusCode, r.body).toBe(303);
  expect(cookies[SESSION_COOKIE]).toBeDefined();
  expect(cookies[SESSION_COOKIE]).not.toBe(before);
  await get("/ui/");
  return {
    get,
    post,
    get cookies() {
      return cookies;
    },
    set cookies(c: Record<string, string>) {
      cookies = c;
    },
  };
}

describe("dashboard sessions", () => {
  it("gives every sign-in a new session id, and keeps only its hash in the database", async () => {
    const { s } = await server();
    const a = await browser(s, "alice", "alices-long-password");
    const first = a.cookies[SESSION_COOKIE];
    await a.post("/ui/logout");
    await a.get("/ui/login");
    await a.post("/ui/login", { name: "alice", password: "alices-long-password", next: "/ui/" });
    expect(a.cookies[SESSION_COOKIE]).not.toBe(first);
    const rows = await s.fleet.db.kysely.selectFrom("sessions").select("id_hash").execute();
    const id = s.app.unsignCookie(String(a.cookies[SESSION_COOKIE])).value ?? "";
    expect(id.length).toBeGreaterThan(40);
    for (const r of rows) expect(r.id_hash).not.toContain(id);
  });

  it("ends a session at sign-out: the old cookie is refused afterwards", async () => {
    const { s } = await server();
    const a = await browser(s, "alice", "alices-long-password");
    const stolen = { ...a.cookies };
    expect((await a.post("/ui/logout")).statusCode).toBe(303);
    const replay = await s.app.inject({ url: "/ui/", cookies: stolen });
    expect(replay.statusCode).toBe(303);
    expect(replay.headers.location).toMatch(/^\/ui\/login/);
    const api = await s.app.inject({ url: "/api/v1/channels", cookies: stolen });
    expect(api.statusCode).toBe(401);
  });

  it("ends every session of an operator on 'sign out everywhere', and only theirs", async () => {
    const { s } = await server();
    const a1 = await browser(s, "alice", "alices-long-password");
    const a2 = await browser(s, "alice", "alices-long-password");
    const b = await browser(s, "bob", "bobs-long-password");
    expect((await a1.post("/ui/logout-everywhere")).statusCode).toBe(303);
    expect((await a2.get("/ui/")).statusCode).toBe(303);
    expect((await b.get("/ui/")).statusCode).toBe(200);
    const audit = await s.fleet.db.auditLog();
    expect(audit.find((e) => e.action === "sign-out-everywhere")).toMatchObject({ actor: "alice", detail: { operator: "alice", sessions: 2 } });
    // The API does it too; a session may end only its own operator's sessions.
    const bob2 = await browser(s, "bob", "bobs-long-password");
    const r = await s.app.inject({
      method: "POST",
      url: "/api/v1/sessions/revoke",
      headers: { authorization: `Bearer ${OPERATOR_TOKEN}` },
      payload: { operator: "bob" },
    });
    expect(r.json()).toEqual({ operator: "bob", ended: 2 });
    expect((await bob2.get("/ui/")).statusCode).toBe(303);
  });

  it("ends the sessions of an operator removed from the operators file, or whose password changed", async () => {
    const { s, write } = await server();
    const a = await browser(s, "alice", "alices-long-password");
    const b = await browser(s, "bob", "bobs-long-password");
    write([`bob:${bobHash}`]);
    expect((await a.get("/ui/")).statusCode).toBe(303);
    expect((await b.get("/ui/")).statusCode).toBe(200);
    write([`bob:${hashPassword("bobs-new-long-password")}`]);
    expect((await b.get("/ui/")).statusCode).toBe(303);
  });

  it("ends sessions opened with the operator token when the token is replaced", async () => {
    const { s, write } = await server();
    const t = await browser(s, "ops", OPERATOR_TOKEN);
    expect((await t.get("/ui/")).body).toContain("ops (token)");
    write([`alice:${aliceHash}`], "a-brand-new-operator-token-0123");
    expect((await t.get("/ui/")).statusCode).toBe(303);
  });

  it("marks the session cookie Secure over HTTPS (a trusted proxy's X-Forwarded-Proto), and not over loopback HTTP", async () => {
    const { s } = await server();
    await s.close();
    servers.pop();
    const proxied = await startTestServer({ auth: { operators: [{ name: "alice", hash: aliceHash }] }, server: { trustProxy: ["127.0.0.1"] } });
    servers.push(proxied);
    const signIn = async (headers: Record<string, string>) => {
      const page = await proxied.app.inject({ url: "/ui/login", headers });
      const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)?.[1] ?? "";
      const r = await proxied.app.inject({
        method: "POST",
        url: "/ui/login",
        headers: { ...headers, "content-type": "application/x-www-form-urlencoded" },
        cookies: Object.fromEntries(page.cookies.map((c) => [c.name, c.value])),
        payload: new URLSearchParams({ csrf, name: "alice", password: "alices-long-password", next: "/ui/" }).toString(),
      });
      return r.cookies.find((c) => c.name === SESSION_COOKIE);
    };
    expect(await signIn({ "x-forwarded-proto": "https", "x-forwarded-for": "192.0.2.5" })).toMatchObject({ secure: true, httpOnly: true, sameSite: "Strict" });
    expect((await signIn({}))?.secure).toBeFalsy();
  });
});

describe("operator credentials over plain HTTP", () => {
  it("are refused from anything but loopback, unless the server allows it", async () => {
    const strict = await startTestServer();
    servers.push(strict);
    const call = (s: TestServer, remoteAddress: string) =>
      s.app.inject({ url: "/api/v1/channels", remoteAddress, headers: { authorization: `Bearer ${OPERATOR_TOKEN}` } });
    expect((await call(strict, "127.0.0.1")).statusCode).toBe(200);
    const far = await call(strict, "192.0.2.7");
    expect(far.statusCode).toBe(403);
    expect(far.json().error).toMatch(/plain HTTP from 192\.0\.2\.7/);
    const lax = await startTestServer({ server: { allowPlainHttp: true } });
    servers.push(lax);
    expect((await call(lax, "192.0.2.7")).statusCode).toBe(200);
  });
});
