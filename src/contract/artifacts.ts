// Names of the files a release ships, exactly as the image's sysupdate transfers match them
// (usr/lib/sysupdate.d/*.transfer, written by the updates feature):
//   <id>_<version>.efi                                   the UKI
//   <id>_<version>.root-<arch>[-verity[-sig]].<uuid>.raw  a partition (.raw.xz in a release)
// The UUID is the one sysupdate gives the new slot (`@u`).
import { architecture, imageId, version } from "./ids.js";

export type ArtifactKind = "uki" | "root" | "root-verity" | "root-verity-sig";

export interface ArtifactName {
  id: string;
  version: string;
  kind: ArtifactKind;
  arch?: string;
  uuid?: string;
  /** Compressed for download (partitions in a release). */
  xz?: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PARTITION = /^(.+)_(.+)\.root-(.+?)(-verity|-verity-sig)?\.([0-9a-f-]{36})\.raw(\.xz)?$/;

export function renderArtifactName(a: ArtifactName): string {
  if (a.kind === "uki") return `${a.id}_${a.version}.efi`;
  if (!a.arch || !a.uuid) throw new Error(`a ${a.kind} file name needs the architecture and the partition UUID`);
  return `${a.id}_${a.version}.root-${a.arch}${a.kind.slice("root".length)}.${a.uuid}.raw${a.xz ? ".xz" : ""}`;
}

/** The parts of a release file name, or undefined when no transfer of a Basalt image would match it. */
export function parseArtifactName(name: string): ArtifactName | undefined {
  const uki = /^(.+)_(.+)\.efi$/.exec(name);
  if (uki?.[1] && uki[2]) {
    return imageId.safeParse(uki[1]).success && version.safeParse(uki[2]).success ? { id: uki[1], version: uki[2], kind: "uki" } : undefined;
  }
  const p = PARTITION.exec(name);
  if (!p?.[1] || !p[2] || !p[3] || !p[5]) return undefined;
  if (!imageId.safeParse(p[1]).success || !version.safeParse(p[2]).success || !architecture.safeParse(p[3]).success || !UUID.test(p[5])) return undefined;
  const kind = `root${p[4] ?? ""}` as ArtifactKind;
  return { id: p[1], version: p[2], kind, arch: p[3], uuid: p[5], xz: Boolean(p[6]) };
}
