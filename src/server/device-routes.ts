// What devices talk to: the stock systemd-sysupdate 257 client's requests, and the report unit's.
//
//   GET|HEAD /v1/<channel>/<image id>/<arch>/<machine-id>/<booted version>[/<boot id>]/SHA256SUMS{,.gpg,.asc}
//   GET|HEAD /v1/<channel>/<image id>/<arch>/<machine-id>/<booted version>[/<boot id>]/<file>
//   POST     /v1/<channel>/<image id>/<arch>/<machine-id>/report     (Authorization: Bearer <device token>)
//
// The index and its signature are one of the signed indexes the image's releases carry, the same for
// a device for a short while (the client fetches both at once); an image without a release has none
// to show (404). Files are served with exact Content-Length, Range, ETag and
// Last-Modified, and never with a Content-Encoding (the client sends no Accept-Encoding). A download
// is recorded once every byte of it was sent: a part or an abandoned transfer proves nothing.
import { basename, dirname } from "node:path";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import * as ids from "../contract/ids.js";
import { DEVICE_INDEX_FILES } from "../contract/release-manifest.js";
import { deviceReportSchema } from "../contract/report.js";
import { DEVICE_ROUTES } from "../contract/urls.js";
import type { DeviceRequest, Fleet } from "../fleet/fleet.js";

declare module "fastify" {
  interface FastifyRequest {
    /** What the access log line of this request says besides method, URL, status and time. */
    logContext: Record<string, unknown> | null;
  }
}

const identity = { channel: ids.channel, image: ids.imageId, arch: ids.architecture, machine: ids.machineId };
const [INDEX, SIGNATURE, ARMORED] = DEVICE_INDEX_FILES;
const fileParams = z.object({ ...identity, booted: ids.version, file: ids.releaseFileName.or(z.enum(DEVICE_INDEX_FILES)) });
const fileParamsWithBoot = fileParams.extend({ boot: ids.bootId });
const reportParams = z.object(identity);

type FileParams = z.infer<typeof fileParamsWithBoot>;

export interface DeviceRouteOptions {
  /** Requests per minute per client address; 0 for no limit. */
  rateLimit: number;
}

/** Whether the response sent the whole file: a 200, or a 206 from the first byte to the last. */
function sentWhole(reply: FastifyReply, size: number): boolean {
  if (reply.statusCode === 200) return true;
  return reply.statusCode === 206 && reply.getHeader("content-range") === `bytes 0-${size - 1}/${size}`;
}

export function registerDeviceRoutes(scope: FastifyInstance, fleet: Fleet, o: DeviceRouteOptions): void {
  const app = scope.withTypeProvider<ZodTypeProvider>();
  const config = { access: "device" as const, ...(o.rateLimit > 0 ? { rateLimit: { max: o.rateLimit, timeWindow: 60_000 } } : {}) };

  const serve = async (req: FastifyRequest<{ Params: Omit<FileParams, "boot"> & { boot?: string } }>, reply: FastifyReply) => {
    const { file, ...p } = req.params;
    const d: DeviceRequest = { channel: p.channel, image: p.image, arch: p.arch, machine: p.machine, booted: p.booted, ...(p.boot ? { boot: p.boot } : {}) };
    const device = { machine: d.machine, booted: d.booted, boot: d.boot, channel: d.channel, file };
    if (file === INDEX || file === SIGNATURE || file === ARMORED) {
      const view = await fleet.view(d);
      if (!view) return reply.code(404).send({ error: `nothing has been published for ${d.image}` });
      req.logContext = { device, index: view.id, offers: view.offers === "release" ? view.version : "nothing" };
      reply.header("cache-control", "no-store").header("etag", `"${view.id.slice(0, 32)}${file.slice(INDEX.length)}"`);
      if (file === INDEX) return reply.type("text/plain; charset=utf-8").send(view.index);
      if (file === SIGNATURE) return reply.type("application/pgp-signature").send(view.signature);
      return reply.type("application/pgp-signature").send(view.armored);
    }
    const offered = await fleet.offeredFile({ ...d, file });
    if (!offered) return reply.code(404).send({ error: "not found" });
    const record = (complete: boolean) =>
      fleet.recordDownload({ ...d, file }, offered, complete).catch((e: Error) => req.log.error({ err: e.message, device }, "recording a download"));
    req.logContext = { device, size: offered.size };
    const { artifact } = offered;
    if (artifact.kind === "url") {
      // The bytes go from the bucket or CDN: the redirect is all this server knows of the download.
      if (req.method === "GET") await record(false);
      return reply.redirect(artifact.url, 302);
    }
    if (req.method === "GET") reply.raw.once("finish", () => sentWhole(reply, artifact.size) && void record(true));
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
  app.get(DEVICE_ROUTES.file, { config, schema: { params: fileParams } }, serve);
  app.get(DEVICE_ROUTES.bootFile, { config, schema: { params: fileParamsWithBoot } }, serve);

  app.post(
    DEVICE_ROUTES.report,
    { bodyLimit: 64 * 1024, config: { ...config, access: "device-report" }, schema: { params: reportParams, body: deviceReportSchema } },
    async (req, reply) => {
      const d = req.params;
      const r = await fleet.report(d, req.body);
      req.logContext = { device: { machine: d.machine, channel: d.channel }, report: { event: r.event, version: r.version, healthy: r.healthy } };
      return reply.code(204).send();
    },
  );
}
