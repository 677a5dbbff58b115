// basalt build: plan, keys, toolchain, mkosi, then collect the artifacts into DIR/out/<version>/
// with SHA256SUMS and a manifest. The version directory is replaced only when everything succeeded.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUILD_FORMAT, type BuildArtifact, type BuildManifest } from "../contract/build-manifest.js";
import { loadAppliance, loadApplianceId } from "../definition/load.js";
import { UserError } from "../errors.js";
import { createPlan, planDir, renderTree, writePlan } from "../generator/plan.js";
import { cmdlineValue, readUki } from "../inspect/pe.js";
import { completeKeySet, createKeySet, type KeySet, keysDir, loadKeySet } from "../keys/keys.js";
import { withLock } from "../process/lock.js";
import { run } from "../process/run.js";
import { renderSha256Sums } from "../release/sha256sums.js";
import type { Reporter } from "../report/reporter.js";
import { ensureMkosi } from "../toolchain/mkosi.js";
import { cacheDir } from "../toolchain/paths.js";
import { ensureSandboxTree, ensureToolsTree, packageCacheDir } from "../toolchain/tools-tree.js";
import { extractUpdatePartitions } from "./extract.js";
import { sha256File } from "./hash.js";
import { checkRootUnits } from "./units.js";

export interface BuildOptions {
  reporter: Reporter;
}

export interface BuildResult {
  outDir: string;
  image: string;
  manifest: BuildManifest;
  logFile: string;
}

/**
 * The appliance's key set, made (development keys) or completed first: the definition may
 * authorize the set's login key, and the plan copies the update key's public keyring into the image.
 */
export async function ensureKeys(dirArg: string, reporter: Reporter): Promise<KeySet> {
  const { dir: applianceDir, id } = loadApplianceId(dirArg);
  const dir = keysDir(applianceDir);
  const existing = loadKeySet(dir);
  if (existing) {
    if (existing.dev) reporter.warn(`signing with the DEVELOPMENT keys in ${dir}; the image is marked dev-signed`);
    for (const added of await completeKeySet(existing, id)) reporter.info(`added ${added} to ${dir}`);
    return existing;
  }
  reporter.warn(
    `no keys in ${dir}: created a DEVELOPMENT key set there (verity + Secure Boot db, update and login keys). The image is marked dev-signed and releases refuse it; run 'basalt keys init' for real keys.`,
  );
  return createKeySet(dir, { dev: true, commonName: id });
}

function mkosiPackages(manifestFile: string): { name: string; version: string }[] {
  if (!existsSync(manifestFile)) return [];
  const m = JSON.parse(readFileSync(manifestFile, "utf8")) as { packages?: { name: string; version: string }[] };
  return (m.packages ?? []).map((p) => ({ name: p.name, version: p.version })).sort((a, b) => a.name.localeCompare(b.name));
}

export async function buildAppliance(dirArg: string, options: BuildOptions): Promise<BuildResult> {
  const { reporter } = options;
  reporter.phase("Keys");
  const keys = await ensureKeys(dirArg, reporter);

  reporter.phase("Load definition");
  const loaded = loadAppliance(dirArg);
  const { id, version } = loaded.appliance;
  const applianceDir = loaded.context.dir;
  const outRoot = join(applianceDir, "out");
  const logDir = join(outRoot, "logs");
  mkdirSync(logDir, { recursive: true });
  const logFile = join(logDir, `build-${version}.log`);
  writeFileSync(logFile, "");

  reporter.phase("Plan");
  const entries = renderTree(loaded);
  const plan = createPlan(loaded, entries);
  const planPath = planDir(applianceDir);
  writePlan(planPath, entries, plan);
  reporter.step(`${entries.size} files in ${planPath}`);

  const staging = join(outRoot, `.staging-${version}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  const onLine = (line: string) => {
    const m = /^‣\s+(.*)$/.exec(line.trim());
    if (m?.[1]) reporter.step(m[1]);
  };

  async function runMkosi() {
    reporter.phase("Toolchain");
    const mkosi = await ensureMkosi(reporter);
    if (!mkosi) throw new UserError("mkosi is not available");
    reporter.step(`mkosi ${mkosi.version} (${mkosi.source})`);
    const tools = await ensureToolsTree(mkosi, reporter, { logFile, onLine });

    reporter.phase("Build image (mkosi)");
    const imageCache = join(cacheDir(), "images", id);
    mkdirSync(imageCache, { recursive: true });
    await run(
      [
        ...mkosi.argv,
        "--directory",
        join(planPath, "mkosi"),
        `--tools-tree=${tools}`,
        `--sandbox-tree=${ensureSandboxTree(loaded.appliance.release)}`,
        `--package-cache-directory=${packageCacheDir()}`,
        `--cache-directory=${imageCache}`,
        "--incremental=yes",
        `--output-directory=${staging}`,
        `--verity-key=${keys.verity.key}`,
        `--verity-certificate=${keys.verity.certificate}`,
        `--secure-boot-key=${keys.db.key}`,
        `--secure-boot-certificate=${keys.db.certificate}`,
        "--force",
        "build",
      ],
      { env: mkosi.env, logFile, onLine, cwd: applianceDir },
    );
    return { mkosi, tools };
  }

  try {
    // One build at a time per cache: mkosi's tools tree, package cache and incremental images are shared.
    const { mkosi, tools } = await withLock(join(cacheDir(), "build"), () => runMkosi(), {
      onWait: () => {
        reporter.phase("Wait for another build on this machine");
        reporter.step(`it holds ${join(cacheDir(), "build.lock")}`);
      },
      onLost: (e) => reporter.warn(`the build lock was lost while building (${e.message}); another build may have used the same caches`),
    });

    reporter.phase("Collect artifacts");
    const output = `${id}_${version}`;
    const disk = `${output}.raw`;
    const ukiName = `${output}.efi`;
    const artifacts: BuildArtifact[] = [];
    for (const [name, kind] of [
      [disk, "disk"],
      [ukiName, "uki"],
    ] as const) {
      const path = join(staging, name);
      if (!existsSync(path)) throw new UserError(`mkosi produced no ${kind} artifact (${name}) in ${staging}`, `full log: ${logFile}`);
      artifacts.push({ name, kind, size: statSync(path).size, sha256: await sha256File(path) });
    }
    artifacts.push(...extractUpdatePartitions(join(staging, disk), staging, { id, version }));
    for (const kind of ["root", "root-verity", "root-verity-sig"] as const) {
      if (!artifacts.some((a) => a.kind === kind)) throw new UserError(`the disk image has no ${kind} partition`, `full log: ${logFile}`);
    }
    // Symlinks and extras mkosi leaves next to the artifacts are not part of the release.
    const keep = new Set([...artifacts.map((a) => a.name), `${output}.manifest`]);
    for (const file of readdirSync(staging)) {
      if (!keep.has(file)) rmSync(join(staging, file), { recursive: true, force: true });
    }
    const roothash = cmdlineValue(readUki(join(staging, ukiName)).cmdline, "roothash") ?? "";
    if (!roothash) throw new UserError("the UKI's command line carries no roothash=", `full log: ${logFile}`);
    const manifest: BuildManifest = {
      format: BUILD_FORMAT,
      id,
      version,
      devSigned: keys.dev,
      roothash,
      mkosiVersion: mkosi.version,
      artifacts,
      packages: mkosiPackages(join(staging, `${output}.manifest`)),
    };
    rmSync(join(staging, `${output}.manifest`), { force: true });
    writeFileSync(join(staging, "SHA256SUMS"), renderSha256Sums(artifacts));
    writeFileSync(join(staging, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);

    reporter.phase("Check units");
    const rootPartition = artifacts.find((a) => a.kind === "root")?.name as string;
    const cycles = await checkRootUnits(mkosi, tools, join(staging, rootPartition), staging, logFile);
    if (cycles.length) {
      throw new UserError(`the image's units form an ordering cycle, which systemd would break at boot by dropping jobs: ${cycles[0]}`, `full log: ${logFile}`);
    }
    const outDir = join(outRoot, version);
    rmSync(outDir, { recursive: true, force: true });
    renameSync(staging, outDir);
    reporter.done();
    return { outDir, image: join(outDir, disk), manifest, logFile };
  } catch (e) {
    if (process.env.BASALT_KEEP !== "1") rmSync(staging, { recursive: true, force: true });
    throw e;
  }
}
