// basalt serve: the fleet server for stock systemd-sysupdate 257 devices (Fastify). Device routes
// (device-routes.ts), the operator API (api-routes.ts), the dashboard (dashboard/) and Prometheus
// metrics (metrics.ts) share one Fleet; who may call each route is declared with it (access.ts),
// every parameter, query and body is checked by a zod schema before a handler sees it, and errors
// become HTTP statuses in one place (errorReply).
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import fastifyCookie from "@fastify/cookie";
import fastifyCsrf from "@fastify/csrf-protection";
import fastifyFormbody from "@fastify/formbody";
import fastifyRateLimit from "@fastify/rate-limit";
import fastifyStatic from "@fastify/static";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyRequest, LogController } from "fastify";
import { hasZodFastifySchemaValidationErrors, serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import { httpStatus, UserError } from "../errors.js";
import { type ArtifactOptions, openArtifactStore } from "../fleet/artifacts/open.js";
import { FleetDb } from "../fleet/db/fleet-db.js";
import { Fleet } from "../fleet/fleet.js";
import { csrfTokenOf, csrfUserOf, registerAccess } from "./access.js";
import { registerApiRoutes } from "./api-routes.js";
import { Auth, type AuthOptions } from "./auth.js";
import { registerDashboard } from "./dashboard/routes.js";
import { registerDeviceRoutes } from "./device-routes.js";
import { createListener, DEFAULT_TIMEOUTS, registerBodyDeadline, type Timeouts, type TlsFiles } from "./listener.js";
import { registerMetrics } from "./metrics.js";
import { Sessions } from "./sessions.js";

export interface ServerOptions {
  fleet: Fleet;
  auth: AuthOptions;
  /** Pino logger options, or false for none (tests). */
  logger?: boolean | object;
  /** Serve /metrics without operator credentials (for a scraper on a trusted network). */
  publicMetrics?: boolean;
  /** Proxies whose X-Forwarded-For/-Proto are believed (addresses or CIDRs); none by default. */
  trustProxy?: string[];
  /** Terminate TLS here, from these files (re-read when they change). */
  tls?: TlsFiles;
  /** Accept operator credentials over plain HTTP from hosts other than this one. */
  allowPlainHttp?: boolean;
  /** Requests per minute one client address may make to the device routes (0: unlimited). */
  deviceRateLimit?: number;
  timeouts?: Partial<Timeouts>;
  /** Seconds a dashboard session lasts. */
  sessionSeconds?: number;
}

/** What a device client may ask per minute from one address: a few hundred devices behind one NAT checking at once. */
export const DEFAULT_DEVICE_RATE_LIMIT = 600;

/** One line a client can act on, and the status that says what happened. */
export function errorReply(error: unknown, req: FastifyRequest): { status: number; message: string } {
  if (hasZodFastifySchemaValidationErrors(error)) {
    const issue = error.validation[0];
    const path = (issue?.instancePath ?? "").split("/").filter(Boolean).join(".");
    const where = [error.validationContext, path].filter(Boolean).join(".");
    return { status: 400, message: `${where}: ${issue?.message ?? "invalid"}` };
  }
  if (error instanceof UserError) return { status: httpStatus(error), message: error.hint ? `${error.message} (${error.hint})` : error.message };
  const status = (error as FastifyError).statusCode;
  if (status && status >= 400 && status < 500) return { status, message: (error as Error).message };
  req.log.error(error);
  return { status: 500, message: "internal error" };
}

export function createServer(options: ServerOptions): FastifyInstance {
  const { fleet } = options;
  const auth = new Auth(options.auth);
  const sessions = new Sessions(fleet, auth, options.sessionSeconds);
  const timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
  const listener = createListener(timeouts, options.tls);
  // One structured access line per request (onResponse below) instead of Fastify's two.
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: 1 << 20,
    trustProxy: options.trustProxy?.length ? options.trustProxy : false,
    serverFactory: listener.factory,
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorate("reloadTls", listener.reloadTls);
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
  void app.register(fastifyCookie, { secret: auth.key("cookie").toString("base64") });
  void app.register(fastifyFormbody);
  void app.register(fastifyCsrf, {
    cookieOpts: { path: "/", httpOnly: true, sameSite: "strict", secure: "auto", signed: true },
    getToken: csrfTokenOf,
    getUserInfo: csrfUserOf,
    csrfOpts: { hmacKey: auth.key("csrf") },
  });
  // Devices read no rate-limit headers; a refusal still says when to come back (retry-after).
  void app.register(fastifyRateLimit, {
    global: false,
    addHeaders: { "x-ratelimit-limit": false, "x-ratelimit-remaining": false, "x-ratelimit-reset": false, "retry-after": true },
    addHeadersOnExceeding: { "x-ratelimit-limit": false, "x-ratelimit-remaining": false, "x-ratelimit-reset": false },
  });
  app.addContentTypeParser("application/octet-stream", (_req, payload, done) => done(null, payload));

  registerAccess(app, { auth, sessions, allowPlainHttp: options.allowPlainHttp ?? false });
  registerBodyDeadline(app, timeouts);

  app.setErrorHandler((error, req, reply) => {
    const { status, message } = errorReply(error, req);
    if (status < 500) req.log.warn({ peer: req.ip, route: req.routeOptions.url, status, err: message }, "refused");
    if (status === 429) reply.header("retry-after", String((error as { retryAfterSeconds?: number }).retryAfterSeconds ?? 60));
    return reply.code(status).send({ error: message });
  });
  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ error: "not found" }));

  // Routes load after the plugins above, so every route sees their hooks (rate limits, CSRF).
  void app.register(async (scope) => {
    registerDeviceRoutes(scope, fleet, { rateLimit: options.deviceRateLimit ?? DEFAULT_DEVICE_RATE_LIMIT });
    registerApiRoutes(scope, fleet, { auth, sessions });
    registerDashboard(scope, fleet, { auth, sessions, allowPlainHttp: options.allowPlainHttp ?? false });
    registerMetrics(scope, fleet, Boolean(options.publicMetrics));
  });
  return app;
}

declare module "fastify" {
  interface FastifyInstance {
    /** Re-reads the TLS certificate and key (SIGHUP); a bad pair keeps the old one and throws. */
    reloadTls(): void;
  }
}

export interface OpenFleetOptions extends Partial<ArtifactOptions> {
  /** Where release files are kept unless `artifacts` says otherwise, and the SQLite database unless `database` does. */
  data: string;
  /** A SQLite file path or a postgres:// URL. */
  database?: string;
  holdSeconds?: number;
  now?: () => number;
  /** Finish commits a killed process left between the store and the database (default true). */
  recover?: boolean;
}

/** A SQLite database path that only its owner can read, its WAL and shared-memory files included (SQLite gives them the database's mode). */
function privateSqlite(path: string): void {
  if (existsSync(path)) {
    chmodSync(path, 0o600);
    for (const extra of ["-wal", "-shm"]) if (existsSync(`${path}${extra}`)) chmodSync(`${path}${extra}`, 0o600);
    return;
  }
  closeSync(openSync(path, "wx", 0o600));
}

/** The default deployment: release files in `data`, the fleet database in `data/fleet.db` or at `database`. */
export async function openFleet(o: OpenFleetOptions): Promise<Fleet> {
  mkdirSync(o.data, { recursive: true, mode: 0o700 });
  // The store first: it fails fast on a wrong bucket or key, before the database is migrated.
  const artifacts = await openArtifactStore({
    artifacts: o.artifacts ?? o.data,
    ...(o.s3 ? { s3: o.s3 } : {}),
    ...(o.downloadUrl ? { downloadUrl: o.downloadUrl } : {}),
  });
  const database = o.database ?? join(o.data, "fleet.db");
  if (!/^postgres(ql)?:\/\//.test(database)) privateSqlite(database.replace(/^sqlite:(\/\/)?/, ""));
  const db = await FleetDb.open(database);
  const fleet = new Fleet({
    db,
    artifacts,
    ...(o.holdSeconds !== undefined ? { holdSeconds: o.holdSeconds } : {}),
    ...(o.now ? { now: o.now } : {}),
  });
  // A commit cut off between the store and the database (a killed process) is finished now;
  // every replica may do this at start-up.
  if (o.recover !== false) await fleet.recoverReleases();
  return fleet;
}
