// basalt release: turns a build output into what an update server publishes. The partitions are
// xz-compressed (systemd-pull 257 decompresses xz, not zstd; the slot padding then costs nothing
// to download), the UKI ships as is, and both indexes a device can be shown for the release (its
// own SHA256SUMS, and one that offers nothing) are signed with the appliance's update key: the
// update server that serves them holds no key.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { sha256File } from "../build/hash.js";
import { buildManifestSchema } from "../contract/build-manifest.js";
import { RELEASE_FORMAT, type ReleaseFile, type ReleaseManifest } from "../contract/release-manifest.js";
import { loadAppliance } from "../definition/load.js";
import { parseInput, UserError } from "../errors.js";
import { keysDir } from "../keys/keys.js";
import { updateKeyPaths } from "../keys/update-key.js";
import { run } from "../process/run.js";
import type { Reporter } from "../report/reporter.js";
import { ensureMkosi, type MkosiTool } from "../toolchain/mkosi.js";
import { runTool } from "../toolchain/tools-run.js";
import { ensureToolsTree } from "../toolchain/tools-tree.js";
import { signReleaseIndexes, writeIndexFiles } from "./indexes.js";
import { releasesDir } from "./layout.js";

export interface ReleaseOptions {
  reporter: Reporter;
  /** Release images signed with development keys (refused otherwise). */
  allowDev?: boolean;
}

/** xz in place with all cores; the slot padding (zeros) compresses to almost nothing. */
async function xzInPlace(tools: { mkosi: MkosiTool; tree: string }, file: string): Promise<void> {
  await runTool(tools.mkosi, tools.tree, ["xz", "-T0", "-6", "--force", file], { capture: true });
}

export async function createRelease(dirArg: string, options: ReleaseOptions): Promise<{ dir: string; manifest: ReleaseManifest }> {
  const { reporter } = options;
  const loaded = loadAppliance(dirArg);
  const { appliance } = loaded;
  const dir = loaded.context.dir;
  const buildDir = join(dir, "out", appliance.version);
  const buildManifestPath = join(buildDir, "manifest.json");
  if (!existsSync(buildManifestPath)) {
    throw new UserError(`${buildDir}: no build of version ${appliance.version}`, `run 'basalt build ${dirArg}' first`);
  }
  const build = parseInput(buildManifestSchema, JSON.parse(readFileSync(buildManifestPath, "utf8")), buildManifestPath);
  if (build.devSigned && !options.allowDev) {
    throw new UserError(
      `${build.id} ${build.version} is signed with development keys; devices would trust them`,
      "run 'basalt keys init' and rebuild, or pass --allow-dev for a test release",
    );
  }
  const keys = updateKeyPaths(keysDir(dir));
  if (!existsSync(keys.key)) throw new UserError(`no update signing key in ${keysDir(dir)}`, `run 'basalt keys init ${dirArg}'`);

  const mkosi = await ensureMkosi(reporter);
  if (!mkosi) throw new UserError("mkosi is not available", "run 'basalt doctor --fix'");
  mkdirSync(join(dir, "out", "logs"), { recursive: true });
  const tools = { mkosi, tree: await ensureToolsTree(mkosi, reporter, { logFile: join(dir, "out", "logs", "release.log") }) };

  const root = releasesDir(dir);
  const staging = join(root, `.staging-${appliance.version}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  try {
    const files: ReleaseFile[] = [];
    for (const a of build.artifacts) {
      if (a.kind === "disk") continue;
      const src = join(buildDir, a.name);
      if (a.kind === "uki") {
        reporter.step(`${a.name} (as is: its sections are compressed already)`);
        await run(["cp", "--reflink=auto", src, join(staging, a.name)]);
        files.push({ name: a.name, kind: a.kind, size: a.size, sha256: a.sha256, installedSize: a.size });
        continue;
      }
      const name = `${a.name}.xz`;
      reporter.step(`${name} (xz)`);
      await run(["cp", "--sparse=always", src, join(staging, a.name)]);
      await xzInPlace(tools, join(staging, a.name));
      const size = statSync(join(staging, name)).size;
      files.push({ name, kind: a.kind as ReleaseFile["kind"], size, sha256: await sha256File(join(staging, name)), installedSize: a.size });
    }
    const signed = await signReleaseIndexes(files, keys);
    writeIndexFiles(staging, signed.indexes);
    const manifest: ReleaseManifest = {
      format: RELEASE_FORMAT,
      id: build.id,
      version: build.version,
      devSigned: build.devSigned,
      roothash: build.roothash,
      signingKey: signed.signingKey,
      publicKey: signed.publicKey,
      files,
      indexes: signed.indexes,
      createdAt: new Date().toISOString(),
    };
    writeFileSync(join(staging, "release.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    const final = join(root, appliance.version);
    rmSync(final, { recursive: true, force: true });
    renameSync(staging, final);
    return { dir: final, manifest };
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }
}
