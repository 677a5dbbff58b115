// basalt doctor: what Basalt will use to build, and whether it is there.
import { existsSync, statSync } from "node:fs";
import type { Reporter } from "../report/reporter.js";
import { debianSourcesFor, readHostSources } from "./apt-sources.js";
import { ensureMkosi, MKOSI_MIN_MAJOR } from "./mkosi.js";
import { cacheDir } from "./paths.js";
import { toolsTreePath } from "./tools-tree.js";

export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DoctorReport {
  ok: boolean;
  checks: DoctorCheck[];
}

export async function runDoctor(options: { fix: boolean; reporter: Reporter }): Promise<DoctorReport> {
  const checks: DoctorCheck[] = [];
  const node = Number(process.versions.node.split(".")[0]);
  checks.push({ name: "node", ok: node >= 20, detail: process.versions.node });
  checks.push({ name: "cache", ok: true, detail: cacheDir() });
  try {
    const sources = debianSourcesFor(readHostSources(), "trixie");
    checks.push({ name: "apt sources", ok: true, detail: `${sources.length} Debian source(s) from the host's configuration` });
  } catch (e) {
    checks.push({ name: "apt sources", ok: false, detail: (e as Error).message });
  }
  const mkosi = await ensureMkosi(options.reporter, { offline: !options.fix });
  checks.push({
    name: "mkosi",
    ok: Boolean(mkosi),
    detail: mkosi ? `${mkosi.version} (${mkosi.source})` : `missing (need >= ${MKOSI_MIN_MAJOR}; 'basalt doctor --fix' or any build fetches it)`,
  });
  if (mkosi) {
    const tools = toolsTreePath(mkosi);
    const ok = existsSync(`${tools}/usr/bin/systemd-repart`);
    checks.push({
      name: "tools tree",
      ok,
      detail: ok ? `${tools} (built ${statSync(tools).mtime.toISOString().slice(0, 10)})` : "not built yet (the first build makes it)",
    });
  }
  checks.push({ name: "/dev/kvm", ok: true, detail: existsSync("/dev/kvm") ? "present (used by VMs when a guest starts)" : "absent (VMs use TCG)" });
  return { ok: checks.every((c) => c.ok || c.name === "tools tree"), checks };
}

export function renderDoctor(r: DoctorReport): string {
  return `${r.checks.map((c) => `${c.ok ? "✔" : "✖"} ${c.name.padEnd(12)} ${c.detail}`).join("\n")}\n`;
}
