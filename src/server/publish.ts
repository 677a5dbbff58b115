// basalt publish: uploads a release to an update server and offers it on a channel, through the
// operator API (the release's files are checked against release.json on the server).
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { loadAppliance } from "../definition/load.js";
import { UserError } from "../errors.js";
import type { ReleaseManifest } from "../release/release.js";
import { releasesDir } from "../release/release.js";
import type { Reporter } from "../report/reporter.js";
import type { ChannelState } from "./store.js";

export interface PublishOptions {
  server: string;
  token: string;
  channel: string;
  reporter: Reporter;
}

async function call(url: string, init: RequestInit & { duplex?: "half" }, token: string): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${token}` } });
  } catch (e) {
    throw new UserError(`${url}: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) {
    let msg = text;
    try {
      msg = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch {}
    throw new UserError(`${init.method ?? "GET"} ${url}: ${res.status} ${msg}`);
  }
  return text ? JSON.parse(text) : undefined;
}

export async function publishRelease(dirArg: string, options: PublishOptions): Promise<ChannelState> {
  const loaded = loadAppliance(dirArg);
  const dir = join(releasesDir(loaded.context.dir), loaded.appliance.version);
  if (!existsSync(join(dir, "release.json"))) throw new UserError(`${dir}: no release`, `run 'basalt release ${dirArg}' first`);
  const manifest = JSON.parse(readFileSync(join(dir, "release.json"), "utf8")) as ReleaseManifest;
  const base = options.server.replace(/\/+$/, "");
  const api = `${base}/api/v1/releases/${encodeURIComponent(manifest.id)}/${encodeURIComponent(manifest.version)}`;
  const { reporter } = options;
  reporter.step(`uploading ${manifest.id} ${manifest.version} to ${base}`);
  await call(api, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(manifest) }, options.token);
  for (const f of manifest.files) {
    reporter.step(`${f.name} (${(f.size / 1e6).toFixed(1)} MB)`);
    await call(
      `${api}/${encodeURIComponent(f.name)}`,
      {
        method: "PUT",
        headers: { "content-type": "application/octet-stream", "content-length": String(f.size) },
        body: Readable.toWeb(createReadStream(join(dir, f.name))) as ReadableStream,
        duplex: "half",
      },
      options.token,
    );
  }
  await call(`${api}/commit`, { method: "POST" }, options.token);
  reporter.step(`offering ${manifest.version} on ${options.channel}`);
  return (await call(
    `${base}/api/v1/channels/${encodeURIComponent(options.channel)}/promote`,
    { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id: manifest.id, version: manifest.version }) },
    options.token,
  )) as ChannelState;
}
