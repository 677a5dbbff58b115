// Boot entries as the guest's bootctl sees them, and one-shot selection of a UKI profile.
import type { SshSession } from "../../../src/vm/ssh.js";
import { sh } from "./scenario.js";

export interface BootEntry {
  id: string;
  title?: string;
  isDefault?: boolean;
  isSelected?: boolean;
  tries?: { left: number; done: number };
}

export async function bootEntries(ssh: SshSession): Promise<BootEntry[]> {
  const entries = JSON.parse(await sh(ssh, "sudo -n bootctl list --json=short --no-pager")) as Record<string, unknown>[];
  return entries.map((e) => ({
    id: String(e.id),
    ...(typeof e.title === "string" ? { title: e.title } : {}),
    ...(typeof e.isDefault === "boolean" ? { isDefault: e.isDefault } : {}),
    ...(typeof e.isSelected === "boolean" ? { isSelected: e.isSelected } : {}),
  }));
}

/** Makes the next boot (only) use the given UKI profile of the newest entry. */
export async function bootProfileOnce(ssh: SshSession, profile: string): Promise<string> {
  const entry = (await bootEntries(ssh)).find((e) => e.id.endsWith(`@${profile}`));
  if (!entry) throw new Error(`no boot entry with profile ${profile}`);
  await sh(ssh, `sudo -n bootctl set-oneshot '${entry.id}'`);
  return entry.id;
}
