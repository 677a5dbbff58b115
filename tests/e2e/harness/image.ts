// Builds (or reuses) an appliance image for the VM scenarios: the definition is copied into the
// e2e work directory, a login key is made for it, and `basalt build` runs on the copy.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { buildAppliance } from "../../../src/build/build.js";
import { loadAppliance } from "../../../src/definition/load.js";
import { ensureLoginKey } from "../../../src/keys/login-key.js";
import { withLock } from "../../../src/process/lock.js";
import { createReporter } from "../../../src/report/reporter.js";

export const E2E_ROOT = resolve(import.meta.dirname, "..");

/** Where images and VM directories go: BASALT_E2E_DIR, or a folder under the OS's /var/tmp. */
export function workDir(): string {
  const dir = resolve(process.env.BASALT_E2E_DIR ?? "/var/tmp/basalt-e2e");
  mkdirSync(dir, { recursive: true });
  return dir;
}

export interface BuiltImage {
  name: string;
  dir: string;
  image: string;
  id: string;
  version: string;
  user: string;
  identity: string;
  buildSeconds: number;
  /** The e2e run that prepared it: images built earlier in the same run are reused. */
  run: string;
}

/** Removes a previous copy of the definition (not its keys, not its build cache and outputs). */
function refreshDefinition(dir: string): void {
  for (const entry of readdirSync(dir)) if (entry !== "out" && entry !== "keys") rmSync(join(dir, entry), { recursive: true, force: true });
}

/**
 * Builds the appliance in `dir`; returns the seconds it took, or 0 when `image` was built from the
 * same definition text earlier in this run (scenarios share versions), or in any run with
 * BASALT_E2E_REUSE=1.
 */
async function buildUnlessReusable(dir: string, image: string, run: string): Promise<number> {
  const stamp = join(dir, "out", ".e2e-definition.json");
  const definition = readFileSync(join(dir, "appliance.toml"), "utf8");
  if (existsSync(image) && existsSync(stamp)) {
    const built = JSON.parse(readFileSync(stamp, "utf8")) as { run: string; definition: string };
    if (built.definition === definition && (built.run === run || process.env.BASALT_E2E_REUSE === "1")) return 0;
  }
  const start = performance.now();
  await buildAppliance(dir, { reporter: createReporter({ live: false }) });
  writeFileSync(stamp, JSON.stringify({ run, definition }));
  return (performance.now() - start) / 1000;
}

/**
 * Builds the definition in `source` (a folder holding appliance.toml and whatever it refers to) as
 * `name`. BASALT_E2E_REUSE=1 keeps an image already built from the same definition.
 */
export async function prepareImage(name: string, source: string, run: string): Promise<BuiltImage> {
  const dir = join(workDir(), "appliances", name);
  return whileAlone(dir, async () => {
    mkdirSync(join(dir, "keys"), { recursive: true, mode: 0o700 });
    refreshDefinition(dir);
    cpSync(source, dir, { recursive: true, verbatimSymlinks: true, filter: (src) => !/\/(out|keys)$/.test(src) });
    const identity = join(dir, "keys", "login_ed25519");
    ensureLoginKey(identity, `basalt-e2e-${name}`);
    const { appliance } = loadAppliance(dir);
    const image = join(dir, "out", appliance.version, `${appliance.id}_${appliance.version}.raw`);
    const buildSeconds = await buildUnlessReusable(dir, image, run);
    return { name, dir, image, id: appliance.id, version: appliance.version, user: appliance.user.name, identity, buildSeconds, run };
  });
}

/**
 * Another version of an already prepared appliance, built from a copy of its directory (same keys,
 * so devices running the first trust it), with `extra` TOML appended (e.g. a broken health check).
 */
export async function prepareVersion(base: BuiltImage, name: string, version: string, extra = ""): Promise<BuiltImage> {
  const dir = join(workDir(), "appliances", name);
  return whileAlone(dir, async () => {
    mkdirSync(dir, { recursive: true });
    refreshDefinition(dir);
    cpSync(base.dir, dir, { recursive: true, verbatimSymlinks: true, filter: (src) => !src.startsWith(join(base.dir, "out")) });
    const toml = readFileSync(join(base.dir, "appliance.toml"), "utf8").replace(/^version = ".*"$/m, `version = "${version}"`);
    writeFileSync(join(dir, "appliance.toml"), `${toml}\n${extra}`);
    const image = join(dir, "out", version, `${base.id}_${version}.raw`);
    const buildSeconds = await buildUnlessReusable(dir, image, base.run);
    return { ...base, name, dir, image, version, buildSeconds };
  });
}

/**
 * Runs `fn` while no other process of the suite works on `path` (the VM suite runs in lanes, one
 * process each: two may ask for the same image, snapshot or release at once; the second reuses it).
 */
export function whileAlone<T>(path: string, fn: () => Promise<T>): Promise<T> {
  return withLock(`${path}.e2e`, fn, { onLost: (e) => console.warn(`e2e: lost the lock on ${path}: ${e.message}`) });
}
