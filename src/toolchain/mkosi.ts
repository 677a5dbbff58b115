// mkosi: the host's when it is new enough, otherwise Debian trixie's package fetched into Basalt's
// cache with a private apt state (the host's apt sources are never changed).
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { output, run } from "../process/run.js";
import type { Reporter } from "../report/reporter.js";
import { debianSourcesFor, readHostSources, renderDeb822 } from "./apt-sources.js";
import { cacheDir } from "./paths.js";

export const MKOSI_MIN_MAJOR = 25;
const MKOSI_RELEASE = "trixie";

export interface MkosiTool {
  /** argv prefix that runs mkosi. */
  argv: string[];
  env: Record<string, string>;
  version: string;
  source: "host" | "cache";
}

export function parseMkosiVersion(text: string): string | undefined {
  return /mkosi\s+([0-9]+(?:\.[0-9]+)*)/.exec(text)?.[1];
}

function majorOf(version: string): number {
  return Number(version.split(".")[0]);
}

async function hostMkosi(): Promise<MkosiTool | undefined> {
  const r = await run(["mkosi", "--version"], { check: false });
  if (r.code !== 0) return undefined;
  const version = parseMkosiVersion(r.stdout);
  if (!version || majorOf(version) < MKOSI_MIN_MAJOR) return undefined;
  return { argv: ["mkosi"], env: {}, version, source: "host" };
}

function cachedMkosi(): MkosiTool | undefined {
  const base = join(cacheDir(), "mkosi");
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => /^[0-9]/.test(v) && existsSync(join(base, v, "root", "usr/lib/python3/dist-packages/mkosi")))
    .sort((a, b) => b.localeCompare(a, undefined, { numeric: true }));
  const v = versions[0];
  if (!v) return undefined;
  const pkgs = join(base, v, "root", "usr/lib/python3/dist-packages");
  return { argv: ["python3", "-m", "mkosi"], env: { PYTHONPATH: pkgs }, version: v.replace(/-.*/, ""), source: "cache" };
}

/** apt-get options for a private state directory; nothing of the host's apt state is touched. */
export function privateAptOptions(dir: string): string[] {
  return [
    "-o",
    `Dir::Etc::sourcelist=${join(dir, "sources.list")}`,
    "-o",
    "Dir::Etc::sourceparts=/nonexistent",
    "-o",
    `Dir::State::Lists=${join(dir, "lists")}`,
    "-o",
    `Dir::Cache=${join(dir, "cache")}`,
    "-o",
    "Debug::NoLocking=1",
    "-o",
    "APT::Sandbox::User=root",
  ];
}

async function downloadMkosi(reporter: Reporter): Promise<MkosiTool> {
  const base = join(cacheDir(), "mkosi");
  const apt = join(base, "apt");
  mkdirSync(join(apt, "lists", "partial"), { recursive: true });
  mkdirSync(join(apt, "cache", "archives", "partial"), { recursive: true });
  const sources = debianSourcesFor(readHostSources(), MKOSI_RELEASE).filter((s) => s.suites.includes(MKOSI_RELEASE));
  const lines = sources.map((s) => `deb [signed-by=${s.signedBy}] ${s.uri} ${MKOSI_RELEASE} main`);
  writeFileSync(join(apt, "sources.list"), `${lines.join("\n")}\n`);
  // Kept for reference next to the one-line list apt reads.
  writeFileSync(join(apt, "sources.sources"), renderDeb822(sources));
  const opts = privateAptOptions(apt);
  reporter.step(`apt-get update (${MKOSI_RELEASE}, private state)`);
  await run(["apt-get", "-q", ...opts, "update"]);
  const download = join(base, "download");
  rmSync(download, { recursive: true, force: true });
  mkdirSync(download, { recursive: true });
  reporter.step("downloading mkosi");
  await run(["apt-get", "-q", ...opts, "download", "mkosi"], { cwd: download });
  const deb = readdirSync(download).find((f) => f.startsWith("mkosi_") && f.endsWith(".deb"));
  if (!deb) throw new UserError("apt-get download mkosi produced no package");
  const version = (/^mkosi_([^_]+)_/.exec(deb)?.[1] ?? "0").replace(/^\d+:/, "");
  const staging = join(base, `${version}.tmp`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  await run(["dpkg-deb", "-x", join(download, deb), join(staging, "root")]);
  const final = join(base, version);
  rmSync(final, { recursive: true, force: true });
  renameSync(staging, final);
  rmSync(download, { recursive: true, force: true });
  const tool = cachedMkosi();
  if (!tool) throw new UserError(`mkosi ${version} was extracted but cannot be found in ${final}`);
  await checkRuns(tool);
  return tool;
}

async function checkRuns(tool: MkosiTool): Promise<void> {
  const text = await output([...tool.argv, "--version"], { env: tool.env });
  if (!parseMkosiVersion(text)) throw new UserError(`mkosi from ${tool.source} does not run: ${text}`);
}

/** Finds or provisions mkosi; `offline` only looks. */
export async function ensureMkosi(reporter: Reporter, options: { offline?: boolean } = {}): Promise<MkosiTool | undefined> {
  const found = (await hostMkosi()) ?? cachedMkosi();
  if (found || options.offline) return found;
  return downloadMkosi(reporter);
}
