// A read-only FAT12/16/32 reader, enough to list and read files of an ESP inside a disk image
// without mounting it (the host may lack loop mounts; inspect must work as any user).
import { UserError } from "../errors.js";
import { readAt } from "./gpt.js";

export interface FatEntry {
  name: string;
  isDirectory: boolean;
  size: number;
  cluster: number;
}

export class FatVolume {
  private readonly bytesPerSector: number;
  private readonly clusterSize: number;
  private readonly fatOffset: number;
  private readonly dataOffset: number;
  private readonly rootDirOffset: number;
  private readonly rootDirBytes: number;
  private readonly rootCluster: number;
  private readonly bits: 12 | 16 | 32;

  constructor(
    private readonly fd: number,
    offset: number,
  ) {
    const b = readAt(fd, offset, 512);
    if (b.readUInt16LE(510) !== 0xaa55) throw new UserError("ESP has no FAT boot sector");
    this.bytesPerSector = b.readUInt16LE(11);
    const sectorsPerCluster = b.readUInt8(13);
    const reserved = b.readUInt16LE(14);
    const fats = b.readUInt8(16);
    const rootEntries = b.readUInt16LE(17);
    const total = b.readUInt16LE(19) || b.readUInt32LE(32);
    const fatSize = b.readUInt16LE(22) || b.readUInt32LE(36);
    this.clusterSize = sectorsPerCluster * this.bytesPerSector;
    this.rootDirBytes = rootEntries * 32;
    const rootDirSectors = Math.ceil(this.rootDirBytes / this.bytesPerSector);
    this.fatOffset = offset + reserved * this.bytesPerSector;
    this.rootDirOffset = this.fatOffset + fats * fatSize * this.bytesPerSector;
    this.dataOffset = this.rootDirOffset + rootDirSectors * this.bytesPerSector;
    const clusters = Math.floor((total - reserved - fats * fatSize - rootDirSectors) / sectorsPerCluster);
    this.bits = clusters < 4085 ? 12 : clusters < 65525 ? 16 : 32;
    this.rootCluster = this.bits === 32 ? b.readUInt32LE(44) : 0;
  }

  private next(cluster: number): number {
    if (this.bits === 32) return readAt(this.fd, this.fatOffset + cluster * 4, 4).readUInt32LE(0) & 0x0fffffff;
    if (this.bits === 16) return readAt(this.fd, this.fatOffset + cluster * 2, 2).readUInt16LE(0);
    const v = readAt(this.fd, this.fatOffset + Math.floor(cluster * 1.5), 2).readUInt16LE(0);
    return cluster & 1 ? v >> 4 : v & 0xfff;
  }

  private isEnd(cluster: number): boolean {
    const limit = this.bits === 32 ? 0x0ffffff8 : this.bits === 16 ? 0xfff8 : 0xff8;
    return cluster >= limit || cluster < 2;
  }

  private readChain(cluster: number, limit?: number): Buffer {
    const parts: Buffer[] = [];
    let read = 0;
    let guard = 0;
    while (!this.isEnd(cluster) && (limit === undefined || read < limit)) {
      parts.push(readAt(this.fd, this.dataOffset + (cluster - 2) * this.clusterSize, this.clusterSize));
      read += this.clusterSize;
      cluster = this.next(cluster);
      if (++guard > 1 << 22) throw new UserError("FAT cluster chain loops");
    }
    const all = Buffer.concat(parts);
    return limit === undefined ? all : all.subarray(0, limit);
  }

  private parseDir(buf: Buffer): FatEntry[] {
    const out: FatEntry[] = [];
    let lfn: string[] = [];
    for (let i = 0; i + 32 <= buf.length; i += 32) {
      const e = buf.subarray(i, i + 32);
      const first = e[0];
      if (first === 0) break;
      if (first === 0xe5) {
        lfn = [];
        continue;
      }
      const attr = e[11] ?? 0;
      if (attr === 0x0f) {
        const part = Buffer.concat([e.subarray(1, 11), e.subarray(14, 26), e.subarray(28, 32)]).toString("utf16le");
        lfn.unshift(part.replace(/\uffff/g, "").replace(/\0.*$/s, ""));
        continue;
      }
      if (attr & 0x08) {
        lfn = [];
        continue;
      }
      const short = `${e.subarray(0, 8).toString("latin1").trimEnd()}${e[8] !== 0x20 ? `.${e.subarray(8, 11).toString("latin1").trimEnd()}` : ""}`;
      const name = lfn.length ? lfn.join("") : short;
      lfn = [];
      if (name === "." || name === "..") continue;
      const cluster = (e.readUInt16LE(20) << 16) | e.readUInt16LE(26);
      out.push({ name, isDirectory: Boolean(attr & 0x10), size: e.readUInt32LE(28), cluster });
    }
    return out;
  }

  list(path: string): FatEntry[] {
    let entries = this.bits === 32 ? this.parseDir(this.readChain(this.rootCluster)) : this.parseDir(readAt(this.fd, this.rootDirOffset, this.rootDirBytes));
    for (const part of path.split("/").filter(Boolean)) {
      const dir = entries.find((e) => e.isDirectory && e.name.toLowerCase() === part.toLowerCase());
      if (!dir) return [];
      entries = this.parseDir(this.readChain(dir.cluster));
    }
    return entries;
  }

  read(entry: FatEntry): Buffer {
    return this.readChain(entry.cluster, entry.size);
  }
}
