// What devices talk to: the stock systemd-sysupdate 257 client's requests, and the report unit's.
//
//   GET|HEAD /v1/<channel>/<image id>/<arch>/<machine-id>/<booted version>[/<boot id>]/SHA256SUMS{,.gpg,.asc}
//   GET|HEAD /v1/<channel>/<image id>/<arch>/<machine-id>/<booted version>[/<boot id>]/<file>
//   POST     /v1/<channel>/<image id>/<arch>/<machine-id>/report     (Authorization: Bearer <device token>)
//
// The index and its signature come from one pre-signed snapshot per device for a short while (the
// client fetches both at once); files are served with exact Content-Length, Range, ETag and
// Last-Modified, and never with a Content-Encoding (the client sends no Accept-Encoding).
import { basename, dirname } from "node:path";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { NAME, VERSION } from "../fleet/artifacts/store.js";
import type { DeviceRequest, Fleet } from "../fleet/fleet.js";
import type { Auth } from "./auth.js";

declare module "fastify" {
  interface FastifyRequest {
    /** What the access log line of this request says besides method, URL, status and time. */
    logContext: Record<string, unknown> | null;
  }
}

const MACHINE_ID = /^[0-9a-f]{32}$/;
const ARCH = /^[a-z0-9_-]{1,32}$/;
// What SHA256SUMS can name (<= 255 bytes); anything else cannot be a file of a release.
const FILE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/;

type DeviceParams = DeviceRequest & { file: string };

type DeviceIdentity = Pick<DeviceRequest, "channel" | "image" | "arch" | "machine">;

/** The channel, image, architecture and machine-id every device path starts with, when well-formed. */
function deviceIdentity(p: DeviceIdentity): DeviceIdentity | undefined {
  if (!NAME.test(p.channel) || !NAME.test(p.image) || !ARCH.test(p.arch) || !MACHINE_ID.test(p.machine)) return undefined;
  return { channel: p.channel, image: p.image, arch: p.arch, machine: p.machine };
}

function deviceRequest(p: DeviceParams): DeviceRequest | undefined {
  const id = deviceIdentity(p);
  if (!id || !VERSION.test(p.booted) || (p.boot !== undefined && !MACHINE_ID.test(p.boot))) return undefined;
  return { ...id, booted: p.booted, ...(p.boot ? { boot: p.boot } : {}) };
}

export function registerDeviceRoutes(app: FastifyInstance, fleet: Fleet, auth: Auth): void {
  const serve = async (req: FastifyRequest<{ Params: DeviceParams }>, reply: FastifyReply) => {
    const d = deviceRequest(req.params);
    const { file } = req.params;
    if (!d || !FILE.test(file)) return reply.code(404).send();
    const device = { machine: d.machine, booted: d.booted, boot: d.boot, channel: d.channel, file };
    if (file === "SHA256SUMS" || file === "SHA256SUMS.gpg" || file === "SHA256SUMS.asc") {
      const snap = await fleet.view(d);
      req.logContext = { device, snapshot: snap.hash, versions: snap.versions };
      reply.header("cache-control", "no-store").header("etag", `"${snap.hash.slice(0, 32)}${file.slice(10)}"`);
      if (file === "SHA256SUMS") return reply.type("text/plain; charset=utf-8").send(snap.index);
      if (file === "SHA256SUMS.gpg") return reply.type("application/pgp-signature").send(snap.signature);
      return reply.type("application/pgp-signature").send(snap.armored);
    }
    // A HEAD, or a Range that does not start at the beginning, is not a download of its own.
    const range = req.headers.range;
    const record = req.method === "GET" && (!range || /^bytes=0-/.test(range));
    const artifact = await fleet.download({ ...d, file }, record);
    if (!artifact) return reply.code(404).send();
    req.logContext = { device, size: artifact.size, recorded: record };
    if (artifact.kind === "url") return reply.redirect(artifact.url, 302);
    return (
      reply
        .type("application/octet-stream")
        // 1 MiB reads instead of 64 KiB: the copy through userspace, not the network, limits large files
        // (bench/serve.ts measured 1.6–2.9 times the throughput).
        .sendFile(basename(artifact.path), dirname(artifact.path), {
          acceptRanges: true,
          cacheControl: true,
          maxAge: "1y",
          immutable: true,
          highWaterMark: 1 << 20,
        } as Parameters<FastifyReply["sendFile"]>[2])
    );
  };
  app.get("/v1/:channel/:image/:arch/:machine/:booted/:file", serve);
  app.get("/v1/:channel/:image/:arch/:machine/:booted/:boot/:file", serve);

  app.post(
    "/v1/:channel/:image/:arch/:machine/report",
    { bodyLimit: 64 * 1024 },
    async (req: FastifyRequest<{ Params: DeviceIdentity }>, reply: FastifyReply) => {
      const d = deviceIdentity(req.params);
      if (!d) return reply.code(404).send();
      if (!auth.device(req.headers.authorization, d.image, d.machine)) {
        req.logContext = { device: { machine: d.machine, image: d.image }, refused: "bad device token" };
        return reply.code(401).header("www-authenticate", "Bearer").send({ error: "a valid device token is required" });
      }
      const r = await fleet.report(d, req.body);
      req.logContext = { device: { machine: d.machine, channel: d.channel }, report: { event: r.event, version: r.version, healthy: r.healthy } };
      return reply.code(204).send();
    },
  );
}
