// Property-based fuzzing of every route the server registers (its own route table): generated path
// parameters, query strings and bodies, sent with the credentials each route needs, so the handlers
// themselves are reached. Whatever comes in, the answer is a status below 500.
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPERATOR_TOKEN, startTestServer, type TestServer } from "../../tests/support/fleet-server.js";
import { fillRoute, MACHINE, ROUTE_SAMPLES } from "../../tests/support/route-samples.js";
import { hashPassword } from "./auth.js";

/** The fuzzer's samples: a published version to pin, the index as the file, a group as the pin's target. */
const SAMPLE: Record<string, string> = { ...ROUTE_SAMPLES, version: "2.0", file: "SHA256SUMS", scope: "group", target: "lab" };

let s: TestServer;
let session: { cookies: Record<string, string>; csrf: string };

beforeAll(async () => {
  s = await startTestServer({ auth: { operators: [{ name: "alice", hash: hashPassword("alices-long-password") }] } });
  await s.publish("demo", "stable", "1.0");
  await s.publish("demo", "stable", "2.0", { percent: 50 });
  await s.fleet.view({ channel: "stable", image: "demo", arch: "x86-64", machine: MACHINE, booted: "1.0" });
  const page = await s.app.inject({ url: "/ui/login" });
  const cookies = Object.fromEntries(page.cookies.map((c) => [c.name, c.value]));
  const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)?.[1] ?? "";
  const r = await s.app.inject({
    method: "POST",
    url: "/ui/login",
    cookies,
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: new URLSearchParams({ csrf, name: "alice", password: "alices-long-password", next: "/ui/" }).toString(),
  });
  for (const c of r.cookies) cookies[c.name] = c.value;
  const home = await s.app.inject({ url: "/ui/", cookies });
  for (const c of home.cookies) cookies[c.name] = c.value;
  session = { cookies, csrf: /name="csrf" value="([^"]+)"/.exec(home.body)?.[1] ?? "" };
  expect(session.csrf).not.toBe("");
}, 60_000);
afterAll(async () => {
  await s?.close();
});

/** Strings a parser may choke on: empty, huge, dots, escapes, control and non-ASCII characters, numbers. */
const nasty = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.constantFrom("", ".", "..", "%", "%00", "%2e%2e", "-", "1e20", "NaN", "-1", "1.5", "null", "true", "__proto__", "constructor", "a".repeat(5000)),
  fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 32, maxLength: 32 }),
);

/** Numbers as a query string or a form carries them. */
const numeric = fc.oneof(
  fc.double().map(String),
  fc.integer().map(String),
  fc.bigInt().map(String),
  fc.constantFrom("1e20", "-0", "Infinity", "0x10", "1.5", "-1", "9007199254740993"),
);
const text = fc.oneof(nasty, numeric);

const bodyValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.record(
    {
      id: fc.oneof(fc.constant("demo"), nasty),
      version: fc.oneof(fc.constant("2.0"), nasty),
      files: fc.oneof(fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }), fc.constant([null]), fc.constant([{ name: 123 }])),
      percent: fc.oneof(fc.double(), fc.integer(), text),
      steps: fc.oneof(fc.array(fc.double(), { maxLength: 4 }), nasty),
      stepSeconds: fc.oneof(fc.double(), nasty),
      paused: fc.oneof(fc.boolean(), nasty),
      machines: fc.oneof(fc.array(nasty, { maxLength: 3 }), nasty),
      operator: nasty,
      event: fc.oneof(fc.constantFrom("boot", "update", "unhealthy"), nasty),
      boot_id: fc.oneof(fc.constant("f".repeat(32)), nasty),
      healthy: fc.oneof(fc.boolean(), nasty),
      uptime_seconds: fc.oneof(fc.double(), nasty),
      entries: fc.array(nasty, { maxLength: 3 }),
    },
    { requiredKeys: [] },
  ),
);

const request = fc.record({
  params: fc.dictionary(fc.constantFrom(...Object.keys(SAMPLE)), fc.oneof(nasty, fc.constantFrom(...Object.values(SAMPLE))), { maxKeys: 4 }),
  query: fc.dictionary(
    fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom("limit", "offset", "image", "version", "channel", "group", "health", "q", "next", "duplicate", "rolled_back") },
      { weight: 1, arbitrary: nasty },
    ),
    fc.oneof(text, fc.array(text, { maxLength: 3 })),
    { maxKeys: 4 },
  ),
  body: bodyValue,
  type: fc.constantFrom("application/json", "application/x-www-form-urlencoded", "application/octet-stream", "text/plain"),
});

function queryFor(query: Record<string, string | string[]>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const x of [v].flat()) q.append(k, x);
  const text = q.toString();
  return text ? `?${text}` : "";
}

function payloadFor(body: unknown, type: string): string {
  if (type === "application/x-www-form-urlencoded") {
    const flat = body && typeof body === "object" && !Array.isArray(body) ? (body as Record<string, unknown>) : { value: body };
    return new URLSearchParams(Object.entries(flat).map(([k, v]) => [k, typeof v === "string" ? v : (JSON.stringify(v) ?? "")])).toString();
  }
  return JSON.stringify(body) ?? "null";
}

describe("fuzzing every route", () => {
  it("never answers a generated request with a server error", async () => {
    const routes = s.app.routeTable.filter((r) => r.method !== "HEAD");
    expect(routes.length).toBeGreaterThan(30);
    const failures: string[] = [];
    for (const route of routes) {
      await fc
        .assert(
          fc.asyncProperty(request, async (g) => {
            const url = `${fillRoute(route.url, { ...SAMPLE, ...g.params })}${queryFor(g.query)}`;
            const credentials =
              route.access === "operator"
                ? { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` } }
                : route.access === "dashboard"
                  ? { cookies: session.cookies, headers: { "x-csrf-token": session.csrf } }
                  : route.access === "device-report"
                    ? { headers: { authorization: `Bearer ${s.tokenFor("demo", g.params.machine ?? MACHINE)}` } }
                    : { headers: {} };
            const hasBody = route.method !== "GET" && route.method !== "DELETE";
            const r = await s.app.inject({
              method: route.method as "GET",
              url,
              ...credentials,
              headers: { ...credentials.headers, ...(hasBody ? { "content-type": g.type } : {}) },
              ...(hasBody ? { payload: payloadFor(g.body, g.type) } : {}),
            });
            if (r.statusCode >= 500) failures.push(`${route.method} ${url} (${g.type}) -> ${r.statusCode} ${r.body.slice(0, 200)}`);
            return r.statusCode < 500;
          }),
          { numRuns: 100, seed: 20261202, endOnFailure: true },
        )
        .catch(() => undefined);
    }
    expect(failures).toEqual([]);
  }, 240_000);
});
