// Who may call what. Every route declares its access where it is registered (`config.access`), a
// route without one cannot be registered, and requests are authorized after routing: whatever the
// spelling of a URL (percent-escapes, absolute-form targets, dot segments), the route it reaches
// decides what it needs.
//
//   public         anyone (the sign-in form, redirects)
//   device         anyone: the stock sysupdate client sends no credentials (rate-limited per client)
//   device-report  a device with its report token (or the fleet token)
//   operator       the operator API: a bearer token, or a dashboard session (plus its CSRF token on changes)
//   dashboard      the dashboard's pages and forms: a session (plus its CSRF token on changes)
//
// Operator credentials travel only over HTTPS (or from loopback) unless the server allows plain
// HTTP; every refusal is logged with the peer and the route.
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from "fastify";
import { AccessDenied } from "../errors.js";
import type { SessionRecord } from "../fleet/db/fleet-db.js";
import type { Auth } from "./auth.js";
import type { Sessions } from "./sessions.js";

export type Access = "public" | "device" | "device-report" | "operator" | "dashboard";

export interface RouteEntry {
  method: string;
  url: string;
  access: Access;
}

/** Who made a request to an operator route. */
export interface Principal {
  operator: string;
  /** The dashboard session it came with; absent for a bearer token. */
  session?: SessionRecord;
}

declare module "fastify" {
  interface FastifyContextConfig {
    access?: Access;
    /** The body is a release file: held to a minimum rate instead of a deadline (timeouts.ts). */
    upload?: boolean;
  }
  interface FastifyRequest {
    principal?: Principal;
  }
  interface FastifyInstance {
    /** Every route with its access, as registered: what the authorization tests walk. */
    routeTable: RouteEntry[];
  }
}

export interface AccessOptions {
  auth: Auth;
  sessions: Sessions;
  /** Accept operator credentials over plain HTTP from other hosts than this one. */
  allowPlainHttp?: boolean;
}

const READS = new Set(["GET", "HEAD", "OPTIONS"]);

export function isLoopback(ip: string): boolean {
  return /^127\./.test(ip) || ip === "::1" || /^::ffff:127\./i.test(ip);
}

/** The operator behind an authorized request (the access hook has made sure there is one). */
export function operatorOf(req: FastifyRequest): string {
  if (!req.principal) throw new Error(`${req.method} ${req.routeOptions.url}: no operator on an operator route`);
  return req.principal.operator;
}

/** Refuses operator credentials that would cross a network in clear text. */
export function checkTransport(req: FastifyRequest, allowPlainHttp: boolean | undefined): void {
  if (req.protocol === "https" || allowPlainHttp || isLoopback(req.ip)) return;
  throw new AccessDenied(
    403,
    `operator credentials are refused over plain HTTP from ${req.ip}`,
    "serve over TLS (--tls-cert, --tls-key) or behind a trusted proxy (--trust-proxy), or pass --allow-plain-http",
  );
}

export function registerAccess(app: FastifyInstance, o: AccessOptions): void {
  app.decorate("routeTable", [] as RouteEntry[]);
  app.addHook("onRoute", (route) => {
    const access = route.config?.access;
    if (!access) throw new Error(`${String(route.method)} ${route.url}: a route must declare who may call it (config.access)`);
    for (const method of [route.method].flat()) app.routeTable.push({ method, url: route.url, access });
  });

  const refuse = (req: FastifyRequest, e: AccessDenied) => {
    req.log.warn({ peer: req.ip, method: req.method, route: req.routeOptions.url, status: e.status, reason: e.message }, "operator access refused");
    throw e;
  };

  app.addHook("onRequest", async (req: FastifyRequest, reply: FastifyReply) => {
    const access = req.routeOptions.config.access;
    // No route matched: the not-found handler answers, nothing runs.
    if (access === undefined || access === "public" || access === "device") return;
    if (access === "device-report") {
      const p = req.params as { image?: string; machine?: string };
      if (!o.auth.device(req.headers.authorization, p.image ?? "", p.machine ?? "")) {
        throw new AccessDenied(401, "a valid device token is required");
      }
      return;
    }
    const bearer = access === "operator" ? o.auth.bearer(req.headers.authorization) : undefined;
    const session = bearer === undefined ? await o.sessions.find(req) : undefined;
    const operator = bearer || session?.operator;
    if (bearer !== undefined || session) {
      try {
        checkTransport(req, o.allowPlainHttp);
      } catch (e) {
        return refuse(req, e as AccessDenied);
      }
    }
    if (!operator) {
      if (access === "dashboard" && READS.has(req.method)) {
        const next = req.url === "/ui" ? "" : `?next=${encodeURIComponent(req.url)}`;
        req.log.info({ peer: req.ip, route: req.routeOptions.url }, "dashboard: sign-in required");
        return reply.redirect(`/ui/login${next}`, 303);
      }
      if (access === "operator") reply.header("www-authenticate", "Bearer");
      return refuse(req, new AccessDenied(401, bearer === false ? "the operator token is wrong" : "a valid operator token or session is required"));
    }
    req.principal = { operator, ...(session ? { session } : {}) };
  });

  // A change made with a session's cookie must carry the session's CSRF token (form field `csrf`
  // or header x-csrf-token): checked once the body is parsed, before it is validated or used.
  app.addHook("preValidation", (req: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
    if (!req.principal?.session || READS.has(req.method)) return done();
    return app.csrfProtection(req, reply, done);
  });
}

/** The CSRF token a request presents: the form's `csrf` field, else the x-csrf-token header. */
export function csrfTokenOf(req: FastifyRequest): string | undefined {
  const field = (req.body as Record<string, unknown> | undefined)?.csrf;
  const token = Array.isArray(field) ? field[0] : field;
  if (typeof token === "string") return token;
  const header = req.headers["x-csrf-token"];
  return typeof header === "string" ? header : undefined;
}

/** What CSRF tokens are bound to: the session, or (on the sign-in form) no one yet. */
export function csrfUserOf(req: FastifyRequest): string {
  return req.principal?.session?.idHash ?? "sign-in";
}
