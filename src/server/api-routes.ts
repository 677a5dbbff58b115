// The operator API (JSON). Every call needs an operator: a bearer token, or a dashboard session
// whose changes also carry its CSRF token (x-csrf-token). The CLI (`basalt publish`, `basalt fleet`)
// and the dashboard use exactly these calls.
//
//   POST   /api/v1/releases/<id>/<version>            release.json: start an upload
//   PUT    /api/v1/releases/<id>/<version>/<file>     the file's bytes (checked against release.json)
//   POST   /api/v1/releases/<id>/<version>/commit     make the release visible
//   GET    /api/v1/releases
//   POST   /api/v1/channels/<channel>/promote         {id, version, percent?, steps?, stepSeconds?, maxFailureRate?, minDevices?}
//   GET    /api/v1/channels
//   GET    /api/v1/rollouts                            every rollout with its numbers
//   GET    /api/v1/rollouts/<id>/<channel>/<version>   progress: changes, first events, stats
//   POST   /api/v1/rollouts/<id>/<channel>/<version>   {percent?, paused?, steps?, stepSeconds?, maxFailureRate?, minDevices?}
//   GET    /api/v1/devices?image=&version=&channel=&group=&health=&duplicate=&rolled_back=&q=&limit=&offset=
//   GET    /api/v1/devices/<id>/<machine-id>          the device and its recent events
//   POST   /api/v1/groups/<id>/<group>                 {machines: [...]} (group "-" clears)
//   GET    /api/v1/pins          PUT|DELETE /api/v1/pins/<id>/<device|group>/<target>   {version}
//   POST   /api/v1/device-tokens/<id>/<machine-id>     the report token to provision on that device
//   GET    /api/v1/audit
import type { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { UserError } from "../errors.js";
import type { DeviceFilter } from "../fleet/db/fleet-db.js";
import type { Fleet, RolloutPatch } from "../fleet/fleet.js";
import type { ReleaseManifest } from "../release/release.js";
import { type Auth, deviceToken } from "./auth.js";
import { channelView } from "./views.js";

export const SESSION_COOKIE = "basalt_session";

declare module "fastify" {
  interface FastifyRequest {
    operator?: string;
  }
}

/** The operator behind a request: bearer token, or session cookie (plus CSRF token on changes). */
export function operatorOf(auth: Auth, req: FastifyRequest, csrfField?: string): string | undefined {
  const bearer = auth.bearer(req.headers.authorization);
  if (bearer) return bearer;
  const cookie = req.cookies?.[SESSION_COOKIE];
  const who = auth.session(cookie);
  if (!who || !cookie) return undefined;
  if (req.method === "GET" || req.method === "HEAD") return who;
  const token = (req.headers["x-csrf-token"] as string | undefined) ?? csrfField;
  return auth.checkCsrf(cookie, token) ? who : undefined;
}

const num = (v: unknown) => (v === undefined || v === null || v === "" ? undefined : Number(v));

/** Rollout settings from a JSON body or a form (strings), unknown keys refused. */
export function rolloutPatch(body: Record<string, unknown>): RolloutPatch {
  const allowed = new Set(["percent", "paused", "steps", "stepSeconds", "maxFailureRate", "minDevices", "id", "version", "reason"]);
  for (const k of Object.keys(body)) if (!allowed.has(k)) throw new UserError(`unknown rollout setting: ${k}`);
  const out: RolloutPatch = {};
  const percent = num(body.percent);
  if (percent !== undefined) out.percent = percent;
  if (body.paused !== undefined) out.paused = body.paused === true || body.paused === "true";
  if (body.steps !== undefined && body.steps !== "") {
    out.steps = Array.isArray(body.steps) ? body.steps.map(Number) : String(body.steps).split(",").map(Number);
  }
  const stepSeconds = num(body.stepSeconds);
  if (stepSeconds !== undefined) out.stepSeconds = stepSeconds;
  const rate = num(body.maxFailureRate);
  if (rate !== undefined) out.maxFailureRate = rate;
  const min = num(body.minDevices);
  if (min !== undefined) out.minDevices = min;
  for (const [k, v] of Object.entries(out)) if (typeof v === "number" && !Number.isFinite(v)) throw new UserError(`${k}: not a number`);
  return out;
}

export function deviceFilter(query: Record<string, string | string[] | undefined>): DeviceFilter {
  // A parameter given twice arrives as a list; the first one counts.
  const q = Object.fromEntries(Object.entries(query).map(([k, v]) => [k, Array.isArray(v) ? v[0] : v])) as Record<string, string | undefined>;
  const f: DeviceFilter = {};
  if (q.image) f.image = q.image;
  if (q.version) f.version = q.version;
  if (q.channel) f.channel = q.channel;
  if (q.group) f.group = q.group;
  if (q.health === "healthy" || q.health === "unhealthy" || q.health === "unknown") f.health = q.health;
  if (q.duplicate === "1" || q.duplicate === "true") f.duplicate = true;
  if (q.rolled_back === "1" || q.rolled_back === "true") f.rolledBack = true;
  if (q.q) f.search = q.q;
  const limit = num(q.limit);
  const offset = num(q.offset);
  if (limit !== undefined && Number.isFinite(limit)) f.limit = Math.max(1, Math.min(1000, limit));
  if (offset !== undefined && Number.isFinite(offset)) f.offset = Math.max(0, offset);
  return f;
}

type Req<P = Record<string, string>, B = unknown, Q = Record<string, string | undefined>> = FastifyRequest<{ Params: P; Body: B; Querystring: Q }>;

export function registerApiRoutes(app: FastifyInstance, fleet: Fleet, auth: Auth): void {
  app.addHook("onRequest", async (req, reply) => {
    if (!req.url.startsWith("/api/")) return;
    req.operator = operatorOf(auth, req);
    if (!req.operator) {
      req.log.warn({ url: req.url }, "unauthorized");
      return reply.code(401).header("www-authenticate", "Bearer").send({ error: "a valid operator token or session is required" });
    }
  });
  const actor = (req: FastifyRequest) => req.operator ?? "?";

  app.get("/api/v1/releases", async () => ({ releases: await fleet.db.releases() }));

  app.post("/api/v1/releases/:id/:version", async (req: Req<{ id: string; version: string }, ReleaseManifest>) => {
    const m = req.body;
    if (!m || m.id !== req.params.id || m.version !== req.params.version) throw new UserError("the release manifest does not match the URL");
    await fleet.beginRelease(m);
    return { uploading: m.files.map((f) => f.name) };
  });

  app.put("/api/v1/releases/:id/:version/:file", async (req: Req<{ id: string; version: string; file: string }>) => {
    const { id, version, file } = req.params;
    await fleet.putFile(id, version, file, req.body as Readable);
    return { stored: file };
  });

  app.post("/api/v1/releases/:id/:version/commit", async (req: Req<{ id: string; version: string }>) => {
    const m = await fleet.commitRelease(req.params.id, req.params.version, actor(req));
    req.log.info({ id: m.id, version: m.version, actor: actor(req) }, "release committed");
    return { committed: `${m.id} ${m.version}` };
  });

  app.get("/api/v1/channels", async () => ({ channels: (await fleet.db.channels()).map(channelView) }));

  app.post("/api/v1/channels/:channel/promote", async (req: Req<{ channel: string }, Record<string, unknown>>) => {
    const body = req.body ?? {};
    const { id, version } = body;
    if (typeof id !== "string" || typeof version !== "string") throw new UserError('body must be {"id": …, "version": …}');
    const c = await fleet.promote(id, req.params.channel, version, actor(req), rolloutPatch(body));
    req.log.info({ id, channel: req.params.channel, version, actor: actor(req) }, "promoted");
    return channelView(c);
  });

  app.get("/api/v1/rollouts", async () => {
    const rollouts = await fleet.db.rollouts();
    return { rollouts: await Promise.all(rollouts.map(async (r) => ({ ...r, stats: await fleet.db.releaseStats(r.image, r.version) }))) };
  });

  app.get("/api/v1/rollouts/:id/:channel/:version", async (req: Req<{ id: string; channel: string; version: string }>) =>
    fleet.progress(req.params.id, req.params.channel, req.params.version),
  );

  app.post("/api/v1/rollouts/:id/:channel/:version", async (req: Req<{ id: string; channel: string; version: string }, Record<string, unknown>>) => {
    const { id, channel, version } = req.params;
    const body = req.body ?? {};
    const r = await fleet.setRollout(id, channel, version, rolloutPatch(body), actor(req), typeof body.reason === "string" ? body.reason : null);
    req.log.info({ rollout: r, actor: actor(req) }, "rollout changed");
    return r;
  });

  app.get("/api/v1/devices", async (req: Req<Record<string, string>, unknown>) => fleet.db.devices(deviceFilter(req.query)));

  app.get("/api/v1/devices/:id/:machine", async (req: Req<{ id: string; machine: string }>, reply: FastifyReply) => {
    const device = await fleet.db.device(req.params.id, req.params.machine);
    if (!device) return reply.code(404).send({ error: `no device ${req.params.machine} of ${req.params.id}` });
    return { device, events: await fleet.db.events({ image: req.params.id, machine: req.params.machine, limit: 200 }) };
  });

  app.post("/api/v1/groups/:id/:group", async (req: Req<{ id: string; group: string }, { machines?: unknown }>) => {
    const machines = req.body?.machines;
    if (!Array.isArray(machines) || !machines.every((m) => typeof m === "string")) throw new UserError('body must be {"machines": ["<machine-id>", …]}');
    const group = req.params.group === "-" ? null : req.params.group;
    return { changed: await fleet.setGroup(req.params.id, machines, group, actor(req)) };
  });

  app.get("/api/v1/pins", async () => ({ pins: await fleet.db.pins() }));

  const scopeOf = (s: string) => {
    if (s !== "device" && s !== "group") throw new UserError(`pin scope must be device or group, not ${s}`);
    return s;
  };
  app.put("/api/v1/pins/:id/:scope/:target", async (req: Req<{ id: string; scope: string; target: string }, { version?: unknown }>) => {
    const version = req.body?.version;
    if (typeof version !== "string") throw new UserError('body must be {"version": …}');
    return fleet.pin(req.params.id, scopeOf(req.params.scope), req.params.target, version, actor(req));
  });
  app.delete("/api/v1/pins/:id/:scope/:target", async (req: Req<{ id: string; scope: string; target: string }>) => ({
    removed: await fleet.unpin(req.params.id, scopeOf(req.params.scope), req.params.target, actor(req)),
  }));

  app.post("/api/v1/device-tokens/:id/:machine", async (req: Req<{ id: string; machine: string }>) => {
    if (!/^[0-9a-f]{32}$/.test(req.params.machine)) throw new UserError(`not a machine-id: ${req.params.machine}`);
    await fleet.db.audit(fleet.now(), actor(req), "device-token", { id: req.params.id, machine: req.params.machine });
    return { token: deviceToken(auth.secret, req.params.id, req.params.machine), credential: "basalt.report-token" };
  });

  app.get("/api/v1/audit", async () => ({ audit: await fleet.db.auditLog(200) }));
}
