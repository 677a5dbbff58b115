// basalt publish: uploads a release to an update server and offers it on a channel, through the
// operator API (the release's files are checked against release.json on the server).
import { createReadStream, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { ReleaseManifest } from "../contract/release-manifest.js";
import { loadAppliance } from "../definition/load.js";
import { UserError } from "../errors.js";
import type { RolloutOptions } from "../fleet/fleet.js";
import { releasesDir } from "../release/layout.js";
import type { Reporter } from "../report/reporter.js";
import { ApiClient } from "./client.js";
import type { ChannelView } from "./views.js";

export interface PublishOptions {
  server: string;
  token: string;
  channel: string;
  /** A staged rollout instead of offering the release to every device at once. */
  rollout?: RolloutOptions;
  reporter: Reporter;
}

/** Publishes the release of the version the appliance in `dirArg` defines. */
export async function publishRelease(dirArg: string, options: PublishOptions): Promise<ChannelView> {
  const loaded = loadAppliance(dirArg);
  const dir = join(releasesDir(loaded.context.dir), loaded.appliance.version);
  if (!existsSync(join(dir, "release.json"))) throw new UserError(`${dir}: no release`, `run 'basalt release ${dirArg}' first`);
  return publishReleaseDir(dir, options);
}

/**
 * Publishes the release in `dir` (its release.json and files): the files are uploaded, the indexes
 * and their signatures travel in release.json.
 */
export async function publishReleaseDir(dir: string, options: PublishOptions): Promise<ChannelView> {
  const manifest = JSON.parse(readFileSync(join(dir, "release.json"), "utf8")) as ReleaseManifest;
  const client = new ApiClient(options.server, options.token);
  const release = `/releases/${encodeURIComponent(manifest.id)}/${encodeURIComponent(manifest.version)}`;
  const { reporter } = options;
  reporter.step(`uploading ${manifest.id} ${manifest.version} to ${client.base}`);
  // Publishing again after a failure is safe: the server says when this very release is published
  // already (an earlier commit went through), and the rest restarts the upload.
  const begun = await client.request<{ committed?: boolean }>("POST", release, manifest);
  if (begun?.committed) reporter.step(`${manifest.id} ${manifest.version} is published already`);
  else {
    for (const f of manifest.files) {
      reporter.step(`${f.name} (${(f.size / 1e6).toFixed(1)} MB)`);
      await client.request("PUT", `${release}/${encodeURIComponent(f.name)}`, undefined, {
        headers: { "content-type": "application/octet-stream", "content-length": String(f.size) },
        body: Readable.toWeb(createReadStream(join(dir, f.name))) as ReadableStream,
        duplex: "half",
      });
    }
    await client.request("POST", `${release}/commit`);
  }
  reporter.step(`offering ${manifest.version} on ${options.channel}`);
  return client.request<ChannelView>("POST", `/channels/${encodeURIComponent(options.channel)}/promote`, {
    id: manifest.id,
    version: manifest.version,
    ...options.rollout,
  });
}
