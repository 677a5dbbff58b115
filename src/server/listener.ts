// The HTTP(S) listener under Fastify: TLS from certificate and key files (re-read when they change,
// without a restart), and the timeouts that keep slow or silent clients from holding connections:
// headers within `headersSeconds`, a body within `bodySeconds` (a release file upload instead at a
// minimum rate per window), and idle keep-alive connections closed.
import { readFileSync, statSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { FastifyInstance, FastifyServerFactory } from "fastify";
import { UserError } from "../errors.js";
import { readSecretFile } from "./auth.js";

export interface Timeouts {
  /** Seconds a client has to send a request's headers. */
  headersSeconds: number;
  /** Seconds a client has to send a request's whole body (bodies are small: reports, forms, JSON). */
  bodySeconds: number;
  /** A release file upload must bring at least this many bytes in every window of `bodySeconds`. */
  uploadBytesPerWindow: number;
  /** Seconds a connection may stay silent (keep-alive between requests included). */
  idleSeconds: number;
}

export const DEFAULT_TIMEOUTS: Timeouts = { headersSeconds: 10, bodySeconds: 10, uploadBytesPerWindow: 256 * 1024, idleSeconds: 60 };

export interface TlsFiles {
  cert: string;
  key: string;
  /** How often the files are looked at for a renewal (default 60 s; SIGHUP reloads at once). */
  checkSeconds?: number;
}

function readTls(tls: TlsFiles): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(tls.cert), key: Buffer.from(readSecretFile(tls.key, "TLS key")) };
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`${tls.cert}: cannot read the TLS certificate: ${(e as Error).message}`);
  }
}

export interface Listener {
  factory: FastifyServerFactory;
  /** Re-reads the certificate and key now (SIGHUP); a bad pair keeps the old one and throws. */
  reloadTls(): void;
}

/** The server Fastify listens with: HTTP, or HTTPS from `tls`, with `timeouts` applied. */
export function createListener(timeouts: Timeouts, tls?: TlsFiles): Listener {
  let server: Server | HttpsServer | undefined;
  const initial = tls ? readTls(tls) : undefined;
  const stamp = () => (tls ? [tls.cert, tls.key].map((f) => statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? 0).join(":") : "");
  let seen = stamp();
  const reloadTls = () => {
    if (!tls || !server || !("setSecureContext" in server)) return;
    seen = stamp();
    server.setSecureContext(readTls(tls));
  };
  const factory: FastifyServerFactory = (handler) => {
    const options = {
      headersTimeout: timeouts.headersSeconds * 1000,
      // The body is timed per route (bodyDeadline below): uploads are long, reports are not.
      requestTimeout: 0,
      keepAliveTimeout: 5000,
      // How often Node looks for connections past their header deadline (default 30 s).
      connectionsCheckingInterval: 1000,
    };
    const s = initial
      ? createHttpsServer({ ...options, ...initial }, handler as (req: IncomingMessage, res: ServerResponse) => void)
      : createHttpServer(options, handler as (req: IncomingMessage, res: ServerResponse) => void);
    s.setTimeout(timeouts.idleSeconds * 1000);
    if (tls) {
      const timer = setInterval(
        () => {
          if (stamp() === seen) return;
          try {
            reloadTls();
          } catch {
            // A renewal caught half-written; the next look finds it whole.
          }
        },
        (tls.checkSeconds ?? 60) * 1000,
      );
      timer.unref();
      s.on("close", () => clearInterval(timer));
    }
    server = s;
    return s;
  };
  return { factory, reloadTls };
}

/**
 * Cuts off a request whose body does not arrive in time: small bodies within `bodySeconds`, uploads
 * (`config.upload`) at `uploadBytesPerWindow` per window. The client gets 408 and the connection is
 * closed, so a trickle cannot hold it.
 */
export function registerBodyDeadline(app: FastifyInstance, timeouts: Timeouts): void {
  app.addHook("onRequest", async (req, reply) => {
    const length = req.headers["content-length"];
    if (!req.headers["transfer-encoding"] && (length === undefined || length === "0")) return;
    const raw = req.raw;
    const socket = raw.socket;
    const upload = Boolean(req.routeOptions.config.upload);
    let last = socket.bytesRead;
    const cutOff = () => {
      clearInterval(timer);
      req.log.warn({ peer: req.ip, route: req.routeOptions.url, received: socket.bytesRead }, "request body too slow: connection closed");
      if (!reply.sent && !reply.raw.headersSent) {
        reply.raw.writeHead(408, { "content-type": "application/json", connection: "close" });
        reply.raw.end(JSON.stringify({ error: `the request body did not arrive in time (${timeouts.bodySeconds} s)` }));
      }
      socket.destroySoon();
    };
    const timer = setInterval(() => {
      if (raw.complete) return clearInterval(timer);
      if (!upload) return cutOff();
      if (socket.bytesRead - last < timeouts.uploadBytesPerWindow) return cutOff();
      last = socket.bytesRead;
    }, timeouts.bodySeconds * 1000);
    timer.unref();
    const stop = () => clearInterval(timer);
    raw.once("end", stop);
    raw.once("close", stop);
    reply.raw.once("close", stop);
  });
}
