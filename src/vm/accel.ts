// KVM when a real guest runs on it, TCG otherwise. A /dev/kvm that opens is not enough: on some
// nested hosts KVM_CREATE_VM works but OVMF dies with an emulation failure, so we try a guest.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { spawnDaemon } from "../process/run.js";
import { cacheDir } from "../toolchain/paths.js";
import { firmwareArgv, type VmTools } from "./tools.js";

export type Accel = "kvm" | "tcg";

const TRIAL_MS = 15_000;

/**
 * `smm`: the guest needs System Management Mode (Secure Boot firmware), which KVM lacks on some
 * hosts where it otherwise works: it is tried separately, with the Secure Boot firmware.
 */
export async function detectAccel(tools: VmTools, options: { smm?: boolean } = {}): Promise<Accel> {
  const forced = process.env.BASALT_VM_ACCEL;
  if (forced === "kvm" || forced === "tcg") return forced;
  if (!existsSync("/dev/kvm")) return "tcg";
  const smm = Boolean(options.smm);
  const dir = join(cacheDir(), "vm");
  const cache = join(dir, smm ? "accel-smm.json" : "accel.json");
  const key = `${release()}`;
  if (existsSync(cache)) {
    const c = JSON.parse(readFileSync(cache, "utf8")) as { key: string; accel: Accel };
    if (c.key === key) return c.accel;
  }
  mkdirSync(dir, { recursive: true });
  const accel = (await kvmBootsFirmware(tools, dir, smm)) ? "kvm" : "tcg";
  writeFileSync(cache, `${JSON.stringify({ key, accel })}\n`);
  return accel;
}

/** Boots OVMF alone under KVM: its boot manager reaching the serial port proves the guest runs. */
async function kvmBootsFirmware(tools: VmTools, dir: string, smm: boolean): Promise<boolean> {
  const trial = smm ? "kvm-trial-smm" : "kvm-trial";
  const serial = join(dir, `${trial}.serial`);
  const vars = join(dir, `${trial}.vars`);
  rmSync(serial, { force: true });
  writeFileSync(vars, readFileSync(tools.firmwareVars));
  const qemu = spawnDaemon(
    [
      ...tools.prefix,
      "qemu-system-x86_64",
      ...firmwareArgv(tools, smm),
      "-accel",
      "kvm",
      "-cpu",
      "host",
      "-m",
      "256",
      "-nodefaults",
      "-display",
      "none",
      "-drive",
      `if=pflash,format=raw,file=${vars}`,
      "-serial",
      `file:${serial}`,
    ],
    { logFile: join(dir, `${trial}.log`), env: tools.env },
  );
  const deadline = Date.now() + TRIAL_MS;
  let ok = false;
  let exited = false;
  void qemu.exited.then(() => {
    exited = true;
  });
  while (Date.now() < deadline && !exited) {
    if (existsSync(serial) && /BdsDxe|UEFI|Shell/.test(readFileSync(serial, "latin1"))) {
      ok = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  qemu.kill("SIGKILL");
  await qemu.exited;
  return ok;
}
