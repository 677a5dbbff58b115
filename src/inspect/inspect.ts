// basalt inspect: what a built disk image holds (partitions by discoverable type, the UKI's command
// line, os-release and profiles) and whether its roothash= matches the verity data on the disk.
import { closeSync, openSync } from "node:fs";
import { UserError } from "../errors.js";
import { FatVolume } from "./fat.js";
import { detectFilesystem, type GptPartition, readGpt } from "./gpt.js";
import { cmdlineValue, parseUki, type UkiProfile } from "./pe.js";
import { readVerityRootHash, readVeritySignature, type VerityProgress, verifyVerityTree } from "./verity.js";

export interface InspectReport {
  image: string;
  ok: boolean;
  problems: string[];
  partitions: (Omit<GptPartition, "attributes" | "offset"> & { offset: number; filesystem?: string })[];
  ukis: { path: string; size: number; cmdline: string; osRelease: Record<string, string>; uname?: string; profiles: UkiProfile[] }[];
  verity?: {
    cmdlineRoothash?: string;
    computedRoothash: string;
    signatureRoothash?: string;
    dataPartitionUuidMatches: boolean;
    hashPartitionUuidMatches: boolean;
    deep?: { rootHash: string; treeMatches: boolean };
  };
}

/** Partition UUIDs systemd derives from a root hash: first 128 bits for data, last 128 for hash. */
export function uuidsFromRoothash(roothash: string): { data: string; hash: string } {
  const fmt = (h: string) => `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  return { data: fmt(roothash.slice(0, 32)), hash: fmt(roothash.slice(-32)) };
}

export interface InspectOptions {
  /** Also rebuild the verity hash tree from the whole root partition (worker threads; reads all of it). */
  deep: boolean;
  /** Progress of the deep check, in data bytes hashed. */
  onProgress?: (progress: VerityProgress) => void;
}

export async function inspectImage(image: string, options: InspectOptions): Promise<InspectReport> {
  const gpt = readGpt(image);
  const fd = openSync(image, "r");
  const problems: string[] = [];
  try {
    const partitions = gpt.partitions.map((p) => {
      const filesystem = detectFilesystem(fd, p.offset);
      const { attributes: _a, ...rest } = p;
      return { ...rest, ...(filesystem ? { filesystem } : {}) };
    });
    const ukis: InspectReport["ukis"] = [];
    const esp = gpt.partitions.find((p) => p.type === "esp");
    if (!esp) problems.push("no ESP partition");
    else {
      const fat = new FatVolume(fd, esp.offset);
      for (const e of fat.list("EFI/Linux").filter((e) => !e.isDirectory && e.name.toLowerCase().endsWith(".efi"))) {
        const uki = parseUki(fat.read(e), `ESP:/EFI/Linux/${e.name}`);
        ukis.push({ path: `/EFI/Linux/${e.name}`, size: e.size, ...uki });
      }
      if (!ukis.length) problems.push("no UKI in the ESP's /EFI/Linux");
    }
    for (const t of ["esp", "root", "root-verity", "root-verity-sig"]) {
      if (!gpt.partitions.some((p) => p.type === t)) problems.push(`no ${t} partition`);
    }
    const root = gpt.partitions.find((p) => p.type === "root");
    if (root && partitions.find((p) => p.index === root.index)?.filesystem !== "erofs") problems.push("root partition is not EROFS");
    const hash = gpt.partitions.find((p) => p.type === "root-verity");
    let verity: InspectReport["verity"];
    if (hash && root) {
      const info = readVerityRootHash(fd, hash.offset);
      const cmdlineRoothash = ukis[0] ? cmdlineValue(ukis[0].cmdline, "roothash") : undefined;
      const sig = gpt.partitions.find((p) => p.type === "root-verity-sig");
      const signatureRoothash = sig ? readVeritySignature(fd, sig.offset, sig.size).rootHash : undefined;
      const uuids = uuidsFromRoothash(info.rootHash);
      verity = {
        ...(cmdlineRoothash ? { cmdlineRoothash } : {}),
        computedRoothash: info.rootHash,
        ...(signatureRoothash ? { signatureRoothash } : {}),
        dataPartitionUuidMatches: root.uuid === uuids.data,
        hashPartitionUuidMatches: hash.uuid === uuids.hash,
      };
      if (!cmdlineRoothash) problems.push("the UKI's command line has no roothash=");
      else if (cmdlineRoothash !== info.rootHash)
        problems.push(`roothash= on the command line (${cmdlineRoothash}) does not match the verity partition (${info.rootHash})`);
      for (const u of ukis.slice(1)) {
        if (cmdlineValue(u.cmdline, "roothash") !== info.rootHash) problems.push(`${u.path}: roothash= does not match the verity partition`);
      }
      if (signatureRoothash && signatureRoothash !== info.rootHash) problems.push("the verity signature partition signs another root hash");
      if (!verity.dataPartitionUuidMatches) problems.push("root partition UUID is not derived from the root hash");
      if (!verity.hashPartitionUuidMatches) problems.push("root-verity partition UUID is not derived from the root hash");
      if (options.deep) {
        const deep = await verifyVerityTree(fd, root.offset, hash.offset, { onProgress: options.onProgress });
        verity.deep = deep;
        if (deep.rootHash !== info.rootHash || !deep.treeMatches) problems.push("the root partition's data does not match its verity hash tree");
      }
    }
    return { image, ok: problems.length === 0, problems, partitions, ukis, ...(verity ? { verity } : {}) };
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`cannot inspect ${image}: ${(e as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

export function renderInspectReport(r: InspectReport): string {
  const out: string[] = [`${r.image}`, "", "Partitions:"];
  for (const p of r.partitions) {
    out.push(
      `  ${String(p.index).padStart(2)} ${p.type.padEnd(16)} ${(p.filesystem ?? "").padEnd(7)} ${mib(p.size).padStart(11)}  ${p.label.padEnd(24)} ${p.uuid}`,
    );
  }
  for (const u of r.ukis) {
    out.push("", `UKI ${u.path} (${mib(u.size)})`);
    out.push(`  os-release: ${u.osRelease.IMAGE_ID ?? u.osRelease.ID ?? "?"} ${u.osRelease.IMAGE_VERSION ?? ""} (${u.osRelease.PRETTY_NAME ?? ""})`);
    if (u.uname) out.push(`  kernel:     ${u.uname}`);
    out.push(`  cmdline:    ${u.cmdline}`);
    for (const p of u.profiles)
      out.push(`  profile @${p.index}: ${p.id ?? "?"}${p.title ? ` (${p.title})` : ""}${p.cmdline && p.cmdline !== u.cmdline ? `: ${p.cmdline}` : ""}`);
  }
  if (r.verity) {
    const v = r.verity;
    out.push("", "Verity:", `  computed root hash: ${v.computedRoothash}`, `  roothash= in UKI:   ${v.cmdlineRoothash ?? "(none)"}`);
    if (v.signatureRoothash) out.push(`  signed root hash:   ${v.signatureRoothash}`);
    if (v.deep) out.push(`  data re-hashed:     ${v.deep.rootHash} (${v.deep.treeMatches ? "tree matches" : "TREE DIFFERS"})`);
  }
  out.push("", r.ok ? "✔ consistent: roothash= matches the verity data" : `✖ ${r.problems.length} problem(s):`);
  for (const p of r.problems) out.push(`  - ${p}`);
  return `${out.join("\n")}\n`;
}
