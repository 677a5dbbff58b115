// basalt serve: the fleet server for stock systemd-sysupdate 257 devices (Fastify). Device routes
// (device-routes.ts), the operator API (api-routes.ts), the dashboard (dashboard/) and Prometheus
// metrics (metrics.ts) share one Fleet and one Auth; the scheduler advances staged rollouts.
import { join } from "node:path";
import fastifyCookie from "@fastify/cookie";
import fastifyFormbody from "@fastify/formbody";
import fastifyStatic from "@fastify/static";
import Fastify, { type FastifyInstance, LogController } from "fastify";
import { UserError } from "../errors.js";
import { type ArtifactOptions, openArtifactStore } from "../fleet/artifacts/open.js";
import { FleetDb } from "../fleet/db/fleet-db.js";
import { Fleet, type Signer } from "../fleet/fleet.js";
import { registerApiRoutes } from "./api-routes.js";
import { Auth, type AuthOptions } from "./auth.js";
import { registerDashboard } from "./dashboard/routes.js";
import { registerDeviceRoutes } from "./device-routes.js";
import { registerMetrics } from "./metrics.js";

export interface ServerOptions {
  fleet: Fleet;
  auth: AuthOptions;
  /** Pino logger options, or false for none (tests). */
  logger?: boolean | object;
  /** Serve /metrics without operator credentials (for a scraper on a trusted network). */
  publicMetrics?: boolean;
}

export function createServer(options: ServerOptions): FastifyInstance {
  const { fleet } = options;
  const auth = new Auth(options.auth);
  // One structured access line per request (onResponse below) instead of Fastify's two.
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: 1 << 20,
    trustProxy: true,
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.decorateRequest("logContext", null);
  app.addHook("onResponse", async (req, reply) => {
    req.log.info(
      { method: req.method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10, ip: req.ip, ...req.logContext },
      "request",
    );
  });
  // Static file serving gives Range, ETag, Last-Modified and HEAD; no Content-Encoding is ever applied.
  // Nothing is served from `root` (serve: false; every sendFile names its directory), but it must exist.
  void app.register(fastifyStatic, { root: import.meta.dirname, serve: false, preCompressed: false });
  void app.register(fastifyCookie);
  void app.register(fastifyFormbody);
  app.addContentTypeParser("application/octet-stream", (_req, payload, done) => done(null, payload));

  app.setErrorHandler((error, req, reply) => {
    if (error instanceof UserError) {
      req.log.warn({ err: error.message }, "refused");
      return reply.code(400).send({ error: error.message });
    }
    const status = (error as { statusCode?: number }).statusCode;
    if (status && status < 500) return reply.code(status).send({ error: (error as Error).message });
    req.log.error(error);
    return reply.code(500).send({ error: "internal error" });
  });

  registerDeviceRoutes(app, fleet, auth);
  registerApiRoutes(app, fleet, auth);
  registerDashboard(app, fleet, auth);
  registerMetrics(app, fleet, auth, Boolean(options.publicMetrics));
  return app;
}

export interface OpenFleetOptions extends Partial<ArtifactOptions> {
  /** Where release files are kept unless `artifacts` says otherwise, and the SQLite database unless `database` does. */
  data: string;
  /** A SQLite file path or a postgres:// URL. */
  database?: string;
  sign: Signer;
  holdSeconds?: number;
  now?: () => number;
}

/** The default deployment: release files in `data`, the fleet database in `data/fleet.db` or at `database`. */
export async function openFleet(o: OpenFleetOptions): Promise<Fleet> {
  // The store first: it fails fast on a wrong bucket or key, before the database is migrated.
  const artifacts = await openArtifactStore({
    artifacts: o.artifacts ?? o.data,
    ...(o.s3 ? { s3: o.s3 } : {}),
    ...(o.downloadUrl ? { downloadUrl: o.downloadUrl } : {}),
  });
  const db = await FleetDb.open(o.database ?? join(o.data, "fleet.db"));
  return new Fleet({
    db,
    artifacts,
    sign: o.sign,
    ...(o.holdSeconds !== undefined ? { holdSeconds: o.holdSeconds } : {}),
    ...(o.now ? { now: o.now } : {}),
  });
}
