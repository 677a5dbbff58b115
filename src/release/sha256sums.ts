// SHA256SUMS exactly as systemd-sysupdate 257 parses it: "<64 hex> <SP><SP> <name> LF" per line,
// every line LF-terminated, no blank lines, comments or CR, names without '/' or control
// characters. Any violation makes the client reject the whole index, so we refuse to write one.
import { NOTHING_OFFERED } from "../contract/release-manifest.js";
import { UserError } from "../errors.js";

export interface SumEntry {
  name: string;
  sha256: string;
}

const HASH = /^[0-9a-f]{64}$/;

export function checkFileName(name: string): void {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (!name || name === "." || name === ".." || name.includes("/") || /[\x00-\x1f\x7f]/.test(name) || name.startsWith("\\") || Buffer.byteLength(name) > 255) {
    throw new UserError(`file name ${JSON.stringify(name)} cannot appear in SHA256SUMS`);
  }
}

export function renderSha256Sums(entries: SumEntry[]): string {
  // sysupdate would parse an empty index, but systemd-pull 257 never gets that far: it fails on a
  // 0-byte body ("Premature connection termination", seen in the VM suite). See renderIndex.
  if (!entries.length) throw new UserError("an empty SHA256SUMS cannot be served: systemd-pull 257 fails on a 0-byte body");
  const seen = new Set<string>();
  const lines = [...entries]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((e) => {
      checkFileName(e.name);
      if (!HASH.test(e.sha256)) throw new UserError(`${e.name}: not a SHA-256: ${e.sha256}`);
      if (seen.has(e.name)) throw new UserError(`${e.name} listed twice in SHA256SUMS`);
      seen.add(e.name);
      return `${e.sha256}  ${e.name}\n`;
    });
  return lines.join("");
}

/** The bytes of an index listing `entries`; with none, the index that offers nothing (NOTHING_OFFERED), never an empty body. */
export function renderIndex(entries: SumEntry[]): Buffer {
  return Buffer.from(renderSha256Sums(entries.length ? entries : [NOTHING_OFFERED]));
}

/** Parses an index the way the client does; throws on anything it would reject. */
export function parseSha256Sums(text: string): SumEntry[] {
  if (text.length && !text.endsWith("\n")) throw new UserError("SHA256SUMS: truncated (no final newline)");
  const out: SumEntry[] = [];
  for (const [i, line] of text.split("\n").slice(0, -1).entries()) {
    const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(line);
    if (!m?.[1] || !m[2]) throw new UserError(`SHA256SUMS line ${i + 1}: malformed: ${JSON.stringify(line)}`);
    checkFileName(m[2]);
    out.push({ sha256: m[1].toLowerCase(), name: m[2] });
  }
  return out;
}
