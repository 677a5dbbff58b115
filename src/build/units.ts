// The image's systemd units, checked before a build is accepted. An ordering cycle is the failure
// that matters most and shows least: systemd breaks it at boot by dropping a job (once, the health
// check and the blessing, so no update would ever have been kept), and nothing is marked failed.
// `systemd-analyze verify` (from the tools tree) builds the same boot transaction offline.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { MkosiTool } from "../toolchain/mkosi.js";
import { runTool } from "../toolchain/tools-run.js";

/** Units whose start is checked: the boot, and what timers start later. */
const CHECKED = ["default.target", "systemd-sysupdate.service"];

/** Unpacks the EROFS root partition into `dir` (no mount, no privileges). */
export async function extractRoot(mkosi: MkosiTool, toolsTree: string, partition: string, dir: string): Promise<void> {
  await runTool(mkosi, toolsTree, ["fsck.erofs", `--extract=${dir}`, partition], { capture: true });
}

/** The ordering cycles systemd finds when it starts the checked units on the unpacked root. */
export async function orderingCycles(mkosi: MkosiTool, toolsTree: string, root: string, logFile?: string): Promise<string[]> {
  const units = CHECKED.filter((u) => existsSync(join(root, "usr/lib/systemd/system", u)));
  const r = await runTool(mkosi, toolsTree, ["systemd-analyze", "verify", `--root=${root}`, "--man=no", "--generators=no", ...units], {
    capture: true,
    check: false,
    ...(logFile ? { logFile } : {}),
  });
  return `${r.stdout}\n${r.stderr}`
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /ordering cycle/i.test(l));
}

/** Checks a built root partition; returns the cycle lines (empty when there are none). */
export async function checkRootUnits(mkosi: MkosiTool, toolsTree: string, partition: string, scratch: string, logFile?: string): Promise<string[]> {
  const dir = mkdtempSync(join(scratch, ".units-"));
  try {
    await extractRoot(mkosi, toolsTree, partition, join(dir, "root"));
    return await orderingCycles(mkosi, toolsTree, join(dir, "root"), logFile);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
