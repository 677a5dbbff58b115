// Apt sources for the image and the tools tree, derived from the host's own configuration so no
// mirror host name is ever written into the repository: same URIs, target release's suites.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";

export interface AptSource {
  uri: string;
  suites: string[];
  components: string[];
  signedBy?: string;
}

/** Parses deb822 `.sources` text into its `deb` entries. */
export function parseDeb822(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last = "";
    for (const raw of stanza.split("\n")) {
      if (raw.startsWith("#") || !raw.trim()) continue;
      if (/^\s/.test(raw) && last) {
        fields.set(last, `${fields.get(last)} ${raw.trim()}`);
        continue;
      }
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(raw);
      if (m?.[1] && m[2] !== undefined) {
        last = m[1].toLowerCase();
        fields.set(last, m[2].trim());
      }
    }
    if (!(fields.get("types") ?? "").split(/\s+/).includes("deb")) continue;
    if (fields.get("enabled") === "no") continue;
    const list = (k: string) => (fields.get(k) ?? "").split(/\s+/).filter(Boolean);
    for (const uri of list("uris")) {
      const signedBy = fields.get("signed-by");
      out.push({ uri, suites: list("suites"), components: list("components"), ...(signedBy ? { signedBy } : {}) });
    }
  }
  return out;
}

/** Parses one-line-style `sources.list` text. */
export function parseOneLine(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const line of text.split("\n")) {
    const m = /^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)$/.exec(line.trim());
    if (!m?.[2] || !m[3]) continue;
    const signed = /signed-by=(\S+)/.exec(m[1] ?? "");
    out.push({ uri: m[2], suites: [m[3]], components: (m[4] ?? "").split(/\s+/).filter(Boolean), ...(signed?.[1] ? { signedBy: signed[1] } : {}) });
  }
  return out;
}

export function readHostSources(etc = "/etc/apt"): AptSource[] {
  const sources: AptSource[] = [];
  const list = join(etc, "sources.list");
  if (existsSync(list)) sources.push(...parseOneLine(readFileSync(list, "utf8")));
  const dir = join(etc, "sources.list.d");
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).sort()) {
      const text = readFileSync(join(dir, f), "utf8");
      if (f.endsWith(".sources")) sources.push(...parseDeb822(text));
      else if (f.endsWith(".list")) sources.push(...parseOneLine(text));
    }
  }
  return sources;
}

const SUFFIXES = ["", "-updates", "-security"];
const DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg";

/**
 * Debian sources for `release`: each host entry that serves Debian (a suite named codename,
 * codename-updates or codename-security) is kept with its URI and given the target's suites.
 */
export function debianSourcesFor(host: AptSource[], release: string): AptSource[] {
  const out: AptSource[] = [];
  const seen = new Set<string>();
  for (const s of host) {
    const suites = s.suites.flatMap((suite) => {
      const suffix = SUFFIXES.find((x) => x && suite.endsWith(x)) ?? "";
      const codename = suffix ? suite.slice(0, -suffix.length) : suite;
      if (!/^[a-z]+$/.test(codename) || ["stable", "testing", "unstable"].includes(codename)) return [];
      // sid has no -updates or -security suites.
      if (release === "sid" && suffix) return [];
      return [`${release}${suffix}`];
    });
    const key = `${s.uri} ${suites.join(" ")}`;
    if (!suites.length || seen.has(key) || !s.components.includes("main")) continue;
    seen.add(key);
    out.push({ uri: s.uri, suites, components: ["main"], signedBy: s.signedBy ?? DEBIAN_KEYRING });
  }
  if (out.length === 0) {
    throw new UserError(
      "found no Debian archive in the host's apt configuration (/etc/apt/sources.list{,.d})",
      "Basalt builds images from the same mirror the host uses",
    );
  }
  return out;
}

export function renderDeb822(sources: AptSource[]): string {
  return sources
    .map((s) =>
      [
        `Types: deb`,
        `URIs: ${s.uri}`,
        `Suites: ${s.suites.join(" ")}`,
        `Components: ${s.components.join(" ")}`,
        ...(s.signedBy ? [`Signed-By: ${s.signedBy}`] : []),
      ].join("\n"),
    )
    .join("\n\n")
    .concat("\n");
}
