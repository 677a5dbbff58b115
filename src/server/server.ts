// basalt serve: the HTTP side of updates, for stock systemd-sysupdate 257 on the device (Fastify).
//
// Devices:  GET|HEAD /v1/<channel>/<image id>/<arch>/<machine-id>/<booted version>/SHA256SUMS{,.gpg,.asc}
//           GET|HEAD /v1/<channel>/<image id>/<arch>/<machine-id>/<booted version>/<file>
// Operators (Authorization: Bearer <token>):
//           POST /api/v1/releases/<id>/<version>            release.json: start an upload
//           PUT  /api/v1/releases/<id>/<version>/<file>     the file's bytes (checked against release.json)
//           POST /api/v1/releases/<id>/<version>/commit     make the release visible
//           POST /api/v1/channels/<channel>/promote         {"id", "version"}: offer it on the channel
//           GET  /api/v1/channels                           channel states
//
// The client fetches SHA256SUMS and its signature at the same time; a publish between the two must
// not pair an index with another index's signature, so each device stays on one snapshot for a
// short while once it has fetched either.
import { timingSafeEqual } from "node:crypto";
import { basename, dirname } from "node:path";
import type { Readable } from "node:stream";
import fastifyStatic from "@fastify/static";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { UserError } from "../errors.js";
import type { ReleaseManifest } from "../release/release.js";
import { type ChannelState, checkName, NAME, type ReleaseStore, VERSION } from "./store.js";

export interface ServerOptions {
  store: ReleaseStore;
  /** Operator token for the API; without one the API refuses every write. */
  token?: string;
  /** Pino logger options, or false for none (tests). */
  logger?: boolean | object;
  /** How long a device keeps the snapshot it started a check with. */
  pinSeconds?: number;
}

const MACHINE_ID = /^[0-9a-f]{32}$/;
const ARCH = /^[a-z0-9_-]{1,32}$/;
const INDEX_FILES = new Set(["SHA256SUMS", "SHA256SUMS.gpg", "SHA256SUMS.asc"]);
// What SHA256SUMS can name (<= 255 bytes); anything else cannot be a file of a release.
const FILE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/;

interface DeviceParams {
  channel: string;
  image: string;
  arch: string;
  machine: string;
  booted: string;
  file: string;
}

export function createServer(options: ServerOptions): FastifyInstance {
  const { store } = options;
  const pinMs = (options.pinSeconds ?? 120) * 1000;
  const pins = new Map<string, { hash: string; until: number }>();
  const app = Fastify({ logger: options.logger ?? false, bodyLimit: 1 << 20 });
  // Static file serving gives Range, ETag, Last-Modified and HEAD; no Content-Encoding is ever applied.
  void app.register(fastifyStatic, { root: "/nonexistent", serve: false, preCompressed: false });
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

  const snapshotFor = (state: ChannelState, machine: string) => {
    const key = `${state.id}/${state.channel}/${machine}`;
    const now = Date.now();
    const pin = pins.get(key);
    const pinned = pin && pin.until > now ? store.snapshot(state.id, pin.hash) : undefined;
    if (pinned) return pinned;
    pins.set(key, { hash: state.snapshot, until: now + pinMs });
    if (pins.size > 100_000) for (const [k, v] of pins) if (v.until <= now) pins.delete(k);
    return store.snapshot(state.id, state.snapshot);
  };

  app.get("/v1/:channel/:image/:arch/:machine/:booted/:file", async (req: FastifyRequest<{ Params: DeviceParams }>, reply: FastifyReply) => {
    const p = req.params;
    if (!NAME.test(p.channel) || !NAME.test(p.image) || !ARCH.test(p.arch) || !MACHINE_ID.test(p.machine) || !VERSION.test(p.booted) || !FILE.test(p.file)) {
      return reply.code(404).send();
    }
    const state = store.channel(p.image, p.channel);
    const device = { machine: p.machine, booted: p.booted, channel: p.channel, file: p.file };
    if (!state) {
      // No release yet: an empty index is valid and offers nothing.
      if (p.file === "SHA256SUMS") return reply.type("text/plain; charset=utf-8").send(Buffer.alloc(0));
      return reply.code(404).send();
    }
    if (INDEX_FILES.has(p.file)) {
      const snap = snapshotFor(state, p.machine);
      if (!snap) return reply.code(503).send();
      req.log.info({ device, snapshot: snap.hash }, "index");
      reply.header("cache-control", "no-store").header("etag", `"${snap.hash.slice(0, 32)}${p.file === "SHA256SUMS" ? "" : p.file.slice(10)}"`);
      if (p.file === "SHA256SUMS") return reply.type("text/plain; charset=utf-8").send(snap.index);
      if (p.file === "SHA256SUMS.gpg") return reply.type("application/pgp-signature").send(snap.signature);
      return reply.type("application/pgp-signature").send(snap.armored);
    }
    const ref = store.file(state, p.file);
    if (!ref) return reply.code(404).send();
    req.log.info({ device, size: ref.size }, "download");
    return reply
      .type("application/octet-stream")
      .sendFile(basename(ref.path), dirname(ref.path), { acceptRanges: true, cacheControl: true, maxAge: "1y", immutable: true });
  });

  const authorized = (req: FastifyRequest): string | undefined => {
    const header = req.headers.authorization ?? "";
    const m = /^Bearer (.+)$/.exec(header);
    if (!options.token || !m?.[1]) return undefined;
    const a = Buffer.from(m[1]);
    const b = Buffer.from(options.token);
    return a.length === b.length && timingSafeEqual(a, b) ? "operator" : undefined;
  };
  app.addHook("onRequest", async (req, reply) => {
    if (!req.url.startsWith("/api/")) return;
    if (!authorized(req)) {
      req.log.warn({ url: req.url }, "unauthorized");
      return reply.code(401).header("www-authenticate", "Bearer").send({ error: "a valid operator token is required" });
    }
  });

  app.get("/api/v1/channels", async () => ({ channels: store.channels() }));

  app.post("/api/v1/releases/:id/:version", async (req: FastifyRequest<{ Params: { id: string; version: string }; Body: ReleaseManifest }>) => {
    const m = req.body;
    if (!m || m.id !== req.params.id || m.version !== req.params.version || !Array.isArray(m.files)) {
      throw new UserError("the release manifest does not match the URL");
    }
    store.beginRelease(m);
    return { uploading: m.files.map((f) => f.name) };
  });

  app.put("/api/v1/releases/:id/:version/:file", async (req: FastifyRequest<{ Params: { id: string; version: string; file: string } }>) => {
    const { id, version, file } = req.params;
    await store.putFile(id, version, file, req.body as Readable);
    return { stored: file };
  });

  app.post("/api/v1/releases/:id/:version/commit", async (req: FastifyRequest<{ Params: { id: string; version: string } }>) => {
    const m = store.commitRelease(req.params.id, req.params.version);
    req.log.info({ id: m.id, version: m.version }, "release committed");
    return { committed: `${m.id} ${m.version}` };
  });

  app.post("/api/v1/channels/:channel/promote", async (req: FastifyRequest<{ Params: { channel: string }; Body: { id?: string; version?: string } }>) => {
    const { id, version } = req.body ?? {};
    if (typeof id !== "string" || typeof version !== "string") throw new UserError('body must be {"id": …, "version": …}');
    checkName("channel", req.params.channel);
    const state = await store.promote(id, req.params.channel, version, authorized(req) ?? "?");
    req.log.info({ state }, "promoted");
    return state;
  });

  return app;
}
