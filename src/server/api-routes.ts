// The operator API (JSON). Every call needs an operator: a bearer token, or a dashboard session
// whose changes also carry its CSRF token (x-csrf-token). The CLI (`basalt publish`, `basalt fleet`)
// and the dashboard use exactly these calls. Parameters, queries and bodies are checked by the
// schemas below before a handler runs.
//
//   POST   /api/v1/releases/<id>/<version>            release.json: start an upload ({committed: true} if it is published already)
//   PUT    /api/v1/releases/<id>/<version>/<file>     the file's bytes (application/octet-stream, checked against release.json)
//   POST   /api/v1/releases/<id>/<version>/commit     make the release visible
//   GET    /api/v1/releases                            every release, with the fingerprint of the key its indexes are signed with (signedBy)
//   POST   /api/v1/channels/<channel>/promote         {id, version, percent?, steps?, stepSeconds?, maxFailureRate?, minDevices?}
//   GET    /api/v1/channels
//   GET    /api/v1/rollouts                            every rollout with its numbers and its release's signedBy
//   GET    /api/v1/rollouts/<id>/<channel>/<version>   progress: changes, first events, stats
//   POST   /api/v1/rollouts/<id>/<channel>/<version>   {percent?, paused?, steps?, stepSeconds?, maxFailureRate?, minDevices?, reason?}
//   GET    /api/v1/devices?image=&version=&channel=&group=&health=&duplicate=&rolled_back=&q=&limit=&offset=
//   GET    /api/v1/devices/<id>/<machine-id>          the device and its recent events
//   POST   /api/v1/groups/<id>/<group>                 {machines: [...]} (group "-" clears)
//   GET    /api/v1/pins          PUT|DELETE /api/v1/pins/<id>/<device|group>/<target>   {version}
//   POST   /api/v1/device-tokens/<id>/<machine-id>     the report token to provision on that device
//   POST   /api/v1/sessions/revoke                     {operator?}: sign an operator out everywhere
//   GET    /api/v1/audit
import type { Readable } from "node:stream";
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import * as ids from "../contract/ids.js";
import { releaseManifestSchema } from "../contract/release-manifest.js";
import { rolloutOptionsSchema, rolloutPatchSchema, withSchedule } from "../contract/rollout.js";
import { AccessDenied, NotFoundError, UserError } from "../errors.js";
import type { DeviceFilter } from "../fleet/db/fleet-db.js";
import type { Fleet } from "../fleet/fleet.js";
import { operatorOf } from "./access.js";
import { type Auth, deviceToken } from "./auth.js";
import type { Sessions } from "./sessions.js";
import { channelView } from "./views.js";

/** An optional query parameter: given twice it arrives as a list and the first one counts; empty (a form's blank field) it is absent. */
const param = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => {
    const x = Array.isArray(v) ? v[0] : v;
    return x === "" ? undefined : x;
  }, schema.optional());
const flag = param(z.enum(["1", "true", "0", "false"]).transform((v) => v === "1" || v === "true"));

/** The device list's filters, from the API's query or the dashboard's. */
export const deviceQuery = z.object({
  image: param(ids.imageId),
  version: param(ids.version),
  channel: param(ids.channel),
  group: param(ids.group),
  health: param(z.enum(["healthy", "unhealthy", "unknown"])),
  duplicate: flag,
  rolled_back: flag,
  q: param(z.string().max(64)),
  limit: param(z.coerce.number().int().min(1).max(1000)),
  offset: param(z.coerce.number().int().min(0).max(1_000_000_000)),
});

export function deviceFilter(q: z.infer<typeof deviceQuery>): DeviceFilter {
  const f: DeviceFilter = {};
  if (q.image) f.image = q.image;
  if (q.version) f.version = q.version;
  if (q.channel) f.channel = q.channel;
  if (q.group) f.group = q.group;
  if (q.health) f.health = q.health;
  if (q.duplicate) f.duplicate = true;
  if (q.rolled_back) f.rolledBack = true;
  if (q.q) f.search = q.q;
  if (q.limit !== undefined) f.limit = q.limit;
  if (q.offset !== undefined) f.offset = q.offset;
  return f;
}

const release = z.object({ id: ids.imageId, version: ids.version });
const rollout = z.object({ id: ids.imageId, channel: ids.channel, version: ids.version });
const device = z.object({ id: ids.imageId, machine: ids.machineId });
const pin = z.object({ id: ids.imageId, scope: z.enum(["device", "group"]), target: z.string().max(64) });
const reason = z.string().max(200).optional();

export interface ApiRouteOptions {
  auth: Auth;
  sessions: Sessions;
}

export function registerApiRoutes(scope: FastifyInstance, fleet: Fleet, o: ApiRouteOptions): void {
  const app = scope.withTypeProvider<ZodTypeProvider>();
  const config = { access: "operator" as const };

  app.get("/api/v1/releases", { config }, async () => ({ releases: await fleet.db.releases() }));

  app.post("/api/v1/releases/:id/:version", { config, schema: { params: release, body: releaseManifestSchema } }, async (req) => {
    const m = req.body;
    if (m.id !== req.params.id || m.version !== req.params.version) throw new UserError("the release manifest does not match the URL");
    const { committed } = await fleet.beginRelease(m, operatorOf(req));
    return { committed, uploading: committed ? [] : m.files.map((f) => f.name) };
  });

  app.put(
    "/api/v1/releases/:id/:version/:file",
    {
      config: { ...config, upload: true },
      schema: {
        params: release.extend({ file: ids.releaseFileName }),
        headers: z.looseObject({ "content-type": z.string().regex(/^application\/octet-stream\s*(;|$)/, "expected application/octet-stream") }),
      },
    },
    async (req) => {
      const { id, version, file } = req.params;
      await fleet.putFile(id, version, file, req.body as Readable);
      return { stored: file };
    },
  );

  app.post("/api/v1/releases/:id/:version/commit", { config, schema: { params: release } }, async (req) => {
    const m = await fleet.commitRelease(req.params.id, req.params.version, operatorOf(req));
    req.log.info({ id: m.id, version: m.version, actor: operatorOf(req) }, "release committed");
    return { committed: `${m.id} ${m.version}` };
  });

  app.get("/api/v1/channels", { config }, async () => ({ channels: (await fleet.db.channels()).map(channelView) }));

  app.post(
    "/api/v1/channels/:channel/promote",
    { config, schema: { params: z.object({ channel: ids.channel }), body: withSchedule(rolloutOptionsSchema.extend(release.shape).strict()) } },
    async (req) => {
      const { id, version, ...options } = req.body;
      const c = await fleet.promote(id, req.params.channel, version, operatorOf(req), options);
      req.log.info({ id, channel: req.params.channel, version, actor: operatorOf(req) }, "promoted");
      return channelView(c);
    },
  );

  app.get("/api/v1/rollouts", { config }, async () => {
    const [rollouts, releases] = await Promise.all([fleet.db.rollouts(), fleet.db.releases()]);
    const signedBy = new Map(releases.map((r) => [`${r.id} ${r.version}`, r.signedBy]));
    return {
      rollouts: await Promise.all(
        rollouts.map(async (r) => ({
          ...r,
          signedBy: signedBy.get(`${r.image} ${r.version}`) ?? null,
          stats: await fleet.db.releaseStats(r.image, r.version),
        })),
      ),
    };
  });

  app.get("/api/v1/rollouts/:id/:channel/:version", { config, schema: { params: rollout } }, async (req) =>
    fleet.progress(req.params.id, req.params.channel, req.params.version),
  );

  app.post(
    "/api/v1/rollouts/:id/:channel/:version",
    { config, schema: { params: rollout, body: withSchedule(rolloutPatchSchema.extend({ reason }).strict()) } },
    async (req) => {
      const { id, channel, version } = req.params;
      const { reason: why, ...patch } = req.body;
      const r = await fleet.setRollout(id, channel, version, patch, operatorOf(req), why ?? null);
      req.log.info({ rollout: r, actor: operatorOf(req) }, "rollout changed");
      return r;
    },
  );

  app.get("/api/v1/devices", { config, schema: { querystring: deviceQuery } }, async (req) => fleet.db.devices(deviceFilter(req.query)));

  app.get("/api/v1/devices/:id/:machine", { config, schema: { params: device } }, async (req) => {
    const found = await fleet.db.device(req.params.id, req.params.machine);
    if (!found) throw new NotFoundError(`no device ${req.params.machine} of ${req.params.id}`);
    return { device: found, events: await fleet.db.events({ image: req.params.id, machine: req.params.machine, limit: 200 }) };
  });

  app.post(
    "/api/v1/groups/:id/:group",
    {
      config,
      schema: {
        params: z.object({ id: ids.imageId, group: ids.group.or(z.literal("-")) }),
        body: z.strictObject({ machines: z.array(ids.machineId).max(10_000) }),
      },
    },
    async (req) => {
      const group = req.params.group === "-" ? null : req.params.group;
      return { changed: await fleet.setGroup(req.params.id, req.body.machines, group, operatorOf(req)) };
    },
  );

  app.get("/api/v1/pins", { config }, async () => ({ pins: await fleet.db.pins() }));

  app.put("/api/v1/pins/:id/:scope/:target", { config, schema: { params: pin, body: z.strictObject({ version: ids.version }) } }, async (req) =>
    fleet.pin(req.params.id, req.params.scope, req.params.target, req.body.version, operatorOf(req)),
  );
  app.delete("/api/v1/pins/:id/:scope/:target", { config, schema: { params: pin } }, async (req) => ({
    removed: await fleet.unpin(req.params.id, req.params.scope, req.params.target, operatorOf(req)),
  }));

  app.post("/api/v1/device-tokens/:id/:machine", { config, schema: { params: device } }, async (req) => {
    await fleet.record(operatorOf(req), "device-token", { id: req.params.id, machine: req.params.machine });
    return { token: deviceToken(o.auth.secret, req.params.id, req.params.machine), credential: "basalt.report-token" };
  });

  app.post(
    "/api/v1/sessions/revoke",
    { config, schema: { body: z.strictObject({ operator: z.string().min(1).max(80).optional() }).optional() } },
    async (req) => {
      const self = operatorOf(req);
      const target = req.body?.operator ?? self;
      // A dashboard session may end only its own operator's sessions; the operator token any.
      if (target !== self && req.principal?.session) throw new AccessDenied(403, "a session may only sign its own operator out everywhere");
      return { operator: target, ended: await o.sessions.closeAll(target, self) };
    },
  );

  app.get("/api/v1/audit", { config }, async () => ({ audit: await fleet.db.auditLog(200) }));
}
