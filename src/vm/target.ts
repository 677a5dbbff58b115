// What `basalt vm …` acts on: an appliance directory (its built image, user and login key, VMs kept
// under out/vms/NAME), a VM directory, or a raw disk image.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { loadAppliance, resolveDefinitionPath } from "../definition/load.js";
import { UserError } from "../errors.js";

export interface VmTarget {
  vmDir: string;
  image?: string;
  user?: string;
  identity?: string;
}

const isPrivateKey = (path: string) => existsSync(path) && statSync(path).isFile() && readFileSync(path, "utf8").includes("PRIVATE KEY");

/** The login key of an appliance: keys/login_ed25519, or the private half next to its authorized_keys. */
export function applianceIdentity(dir: string, authorizedKeys: string): string | undefined {
  const candidates = [join(dir, "keys", "login_ed25519")];
  if (authorizedKeys.endsWith(".pub")) candidates.push(resolve(dir, authorizedKeys.slice(0, -4)));
  return candidates.find(isPrivateKey);
}

export function resolveVmTarget(arg: string, name: string, vmDirOption?: string): VmTarget {
  const abs = resolve(arg);
  if (existsSync(join(abs, "vm.json"))) return { vmDir: abs };
  if (existsSync(abs) && statSync(abs).isFile() && abs.endsWith(".raw")) {
    return { vmDir: resolve(vmDirOption ?? join(dirname(abs), "..", "vms", name)), image: abs };
  }
  let dir: string;
  try {
    dir = resolveDefinitionPath(abs).dir;
  } catch {
    throw new UserError(`${arg}: not an appliance directory, a VM directory or a .raw disk image`);
  }
  const { appliance } = loadAppliance(dir);
  const image = join(dir, "out", appliance.version, `${appliance.id}_${appliance.version}.raw`);
  const identity = applianceIdentity(dir, appliance.user.authorized_keys);
  return {
    vmDir: resolve(vmDirOption ?? join(dir, "out", "vms", name)),
    image,
    user: appliance.user.name,
    ...(identity ? { identity } : {}),
  };
}
