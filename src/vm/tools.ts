// QEMU, swtpm, qemu-img and OVMF for VMs, all taken from mkosi's tools tree and run through its
// sandbox, so the host needs none of them installed.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import type { Reporter } from "../report/reporter.js";
import { ensureMkosi } from "../toolchain/mkosi.js";
import { cacheDir } from "../toolchain/paths.js";
import { sandboxArgv } from "../toolchain/tools-run.js";
import { ensureToolsTree } from "../toolchain/tools-tree.js";

export interface VmTools {
  toolsTree: string;
  /** Prefix that runs a program from the tools tree: `[...prefix, "qemu-img", ...]`. */
  prefix: string[];
  env: Record<string, string>;
  /** OVMF without Secure Boot (it needs no SMM, which KVM lacks on some hosts). */
  firmwareCode: string;
  /** UEFI variables with no keys: Secure Boot in setup mode, where a boot loader may enroll its own. */
  firmwareVars: string;
  /** OVMF with Secure Boot (needs SMM: QEMU's TCG emulates it). */
  secureBootCode: string;
  /** UEFI variables with Microsoft's keys enrolled, as on a PC bought in a shop. */
  vendorVars: string;
}

export async function ensureVmTools(reporter: Reporter): Promise<VmTools> {
  const mkosi = await ensureMkosi(reporter);
  if (!mkosi) throw new UserError("mkosi is not available", "run 'basalt doctor --fix'");
  const toolsTree = await ensureToolsTree(mkosi, reporter, { logFile: join(cacheDir(), "tools-tree.log") });
  const firmwareCode = join(toolsTree, "usr/share/OVMF/OVMF_CODE_4M.fd");
  const firmwareVars = join(toolsTree, "usr/share/OVMF/OVMF_VARS_4M.fd");
  const secureBootCode = join(toolsTree, "usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
  const vendorVars = join(toolsTree, "usr/share/OVMF/OVMF_VARS_4M.ms.fd");
  for (const f of [firmwareCode, firmwareVars, secureBootCode, vendorVars, join(toolsTree, "usr/bin/qemu-system-x86_64"), join(toolsTree, "usr/bin/swtpm")]) {
    if (!existsSync(f)) throw new UserError(`the tools tree lacks ${f}`, "remove it from the cache and build again");
  }
  return { toolsTree, prefix: sandboxArgv(mkosi, toolsTree), env: mkosi.env, firmwareCode, firmwareVars, secureBootCode, vendorVars };
}

/**
 * QEMU's machine and firmware options: plain OVMF, or OVMF with Secure Boot, whose variables are
 * guarded by SMM (only firmware code running in it may write them).
 */
export function firmwareArgv(tools: VmTools, secureBoot: boolean): string[] {
  return [
    "-machine",
    `q35,smm=${secureBoot ? "on" : "off"}`,
    ...(secureBoot ? ["-global", "driver=cfi.pflash01,property=secure,value=on", "-global", "ICH9-LPC.disable_s3=1"] : []),
    "-drive",
    `if=pflash,format=raw,readonly=on,file=${secureBoot ? tools.secureBootCode : tools.firmwareCode}`,
  ];
}
