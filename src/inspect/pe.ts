// Reads the sections of a Unified Kernel Image (a PE/COFF file): .cmdline, .osrel, .uname and the
// per-profile sections that follow each .profile (systemd-stub(7) "Multi-Profile UKIs").
import { readFileSync } from "node:fs";
import { UserError } from "../errors.js";

export interface PeSection {
  name: string;
  data: Buffer;
}

export interface UkiProfile {
  /** Profile number as systemd-boot passes it (@N); 0 is the base. */
  index: number;
  id?: string;
  title?: string;
  cmdline?: string;
}

export interface UkiInfo {
  sections: string[];
  cmdline: string;
  osRelease: Record<string, string>;
  uname?: string;
  profiles: UkiProfile[];
}

export function readPeSections(buf: Buffer, what: string): PeSection[] {
  if (buf.length < 64 || buf.toString("latin1", 0, 2) !== "MZ") throw new UserError(`${what} is not a PE/EFI file`);
  const pe = buf.readUInt32LE(0x3c);
  if (buf.toString("latin1", pe, pe + 4) !== "PE\0\0") throw new UserError(`${what} has no PE header`);
  const count = buf.readUInt16LE(pe + 6);
  const optSize = buf.readUInt16LE(pe + 20);
  const table = pe + 24 + optSize;
  const sections: PeSection[] = [];
  for (let i = 0; i < count; i++) {
    const s = table + i * 40;
    const name = buf.toString("latin1", s, s + 8).replace(/\0+$/, "");
    const virtualSize = buf.readUInt32LE(s + 8);
    const rawSize = buf.readUInt32LE(s + 16);
    const rawPtr = buf.readUInt32LE(s + 20);
    sections.push({ name, data: buf.subarray(rawPtr, rawPtr + Math.min(virtualSize || rawSize, rawSize)) });
  }
  return sections;
}

export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] && m[2] !== undefined) out[m[1]] = m[2].replace(/^(["'])(.*)\1$/, "$2");
  }
  return out;
}

const text = (b: Buffer) => b.toString("utf8").replace(/\0+$/, "").trim();

export function readUki(path: string): UkiInfo {
  return parseUki(readFileSync(path), path);
}

export function parseUki(buf: Buffer, what: string): UkiInfo {
  const sections = readPeSections(buf, what);
  const base: Record<string, Buffer> = {};
  const profiles: UkiProfile[] = [];
  // Sections before the first .profile are the base; after it, each belongs to the latest profile.
  let inProfiles = false;
  for (const s of sections) {
    if (s.name === ".profile") {
      inProfiles = true;
      const { ID: id, TITLE: title } = parseOsRelease(text(s.data));
      profiles.push({ index: profiles.length, ...(id ? { id } : {}), ...(title ? { title } : {}) });
      continue;
    }
    if (inProfiles) {
      const p = profiles[profiles.length - 1];
      if (s.name === ".cmdline" && p) p.cmdline = text(s.data);
    } else if (!(s.name in base)) {
      base[s.name] = s.data;
    }
  }
  const cmdline = base[".cmdline"] ? text(base[".cmdline"]) : "";
  // A profile without its own .cmdline boots with the base one.
  for (const p of profiles) p.cmdline ??= cmdline;
  return {
    sections: sections.map((s) => s.name),
    cmdline,
    osRelease: base[".osrel"] ? parseOsRelease(text(base[".osrel"])) : {},
    ...(base[".uname"] ? { uname: text(base[".uname"]) } : {}),
    profiles,
  };
}

export function cmdlineValue(cmdline: string, key: string): string | undefined {
  for (const arg of cmdline.split(/\s+/)) {
    if (arg.startsWith(`${key}=`)) return arg.slice(key.length + 1);
  }
  return undefined;
}
