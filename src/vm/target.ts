// What `basalt vm …` acts on: an appliance directory (its built image, user and login key, VMs kept
// under out/vms/NAME), a VM directory, or a raw disk image.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { loadAppliance, resolveDefinitionPath } from "../definition/load.js";
import { UserError } from "../errors.js";
import { keysDir } from "../keys/keys.js";
import { loginKeyPaths, publicKeyBlobOf, publicKeyBlobs } from "../keys/login-key.js";

export interface VmTarget {
  vmDir: string;
  image?: string;
  user?: string;
  identity?: string;
}

/**
 * The login key of an appliance: its key set's (keys/login_ed25519) or the private half next to its
 * authorized_keys file, whichever that file authorizes. None when it authorizes only other keys (a
 * user's own, as `basalt init` writes): ssh then offers the user's keys.
 */
export function applianceIdentity(dir: string, authorizedKeys: string): string | undefined {
  const file = resolve(dir, authorizedKeys);
  if (!existsSync(file) || !statSync(file).isFile()) return undefined;
  const authorized = new Set(publicKeyBlobs(readFileSync(file, "utf8")));
  const candidates = [loginKeyPaths(keysDir(dir)).key];
  if (authorizedKeys.endsWith(".pub")) candidates.push(resolve(dir, authorizedKeys.slice(0, -4)));
  return candidates.find((c) => {
    const blob = publicKeyBlobOf(c);
    return blob !== undefined && authorized.has(blob);
  });
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
