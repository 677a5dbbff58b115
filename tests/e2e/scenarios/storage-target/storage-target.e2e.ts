// Storage target mode: the storage-target UKI profile boots into systemd-storagetm, which exports
// the disk over NVMe/TCP. The test is an NVMe/TCP host of its own (harness/nvme-tcp.ts): it finds
// the subsystem through the discovery controller, reads the exported disk and compares it with
// what is exactly knowable: the built image's partition table as first boot grew it, and the root
// partition's bytes, which the guest never writes.
import { createHmac } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { crc32 } from "node:zlib";
import { afterAll, expect, inject, it } from "vitest";
import { parseGpt, readAt } from "../../../../src/inspect/gpt.js";
import { bootProfileOnce } from "../../harness/boot-entries.js";
import { DISCOVERY_NQN, discover, NvmeNamespace, nvmeTcpHandshake } from "../../harness/nvme-tcp.js";
import { poll } from "../../harness/poll.js";
import { BOOT_TIMEOUT_MS, Scenario } from "../../harness/scenario.js";

const NVME_TCP_PORT = 4420;
const SECTOR = 512;
/** Protective MBR, primary GPT header and a 128-entry array: LBA 0 to 33. */
const GPT_SECTORS = 34;
const image = inject("sharedImage");
const s = new Scenario("storage-target");
afterAll(() => s.finish());

/**
 * The partitions the guest's disk holds after first boot, by hand: the image's four (Basalt's
 * labels `<id>_<version>`, `_v`, `_s`) then what repart adds on first boot, the empty B slot and
 * /var. Type GUIDs from the UAPI Discoverable Partitions Specification (x86-64).
 */
const EXPECTED_PARTITIONS = [
  { type: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", label: "esp" },
  { type: "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", label: `${image.id}_${image.version}` },
  { type: "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5", label: `${image.id}_${image.version}_v` },
  { type: "41092b05-9fc8-4523-994f-2def0408b176", label: `${image.id}_${image.version}_s` },
  { type: "4f68bce3-e8cd-4db1-96e7-fbcaf984b709", label: "_empty" },
  { type: "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5", label: "_empty" },
  { type: "41092b05-9fc8-4523-994f-2def0408b176", label: "_empty" },
  { type: "4d21b016-b534-45c2-a9fb-5c16e091fd2d", label: `${image.id}_var` },
];
const IMAGE_PARTITIONS = 4;

/**
 * sd_id128_get_machine_app_specific() (systemd's sd-id128): HMAC-SHA256 keyed with the machine ID
 * over the application ID, the first 16 bytes made a v4 UUID. Written again here, not taken from
 * the guest, so the NQN and serial storagetm derives from it are checked, not copied.
 */
function appSpecificId(machineId: string, appId: string): string {
  const id = createHmac("sha256", Buffer.from(machineId.replaceAll("-", ""), "hex"))
    .update(Buffer.from(appId, "hex"))
    .digest()
    .subarray(0, 16);
  id[6] = ((id[6] ?? 0) & 0x0f) | 0x40;
  id[8] = ((id[8] ?? 0) & 0x3f) | 0x80;
  return id.toString("hex");
}

/** A qemu-img size ("8G") in bytes; its suffixes are binary. */
function sizeBytes(size: string): number {
  const m = /^(\d+)([KMGT]?)$/.exec(size);
  if (!m) throw new Error(`unexpected disk size ${size}`);
  return Number(m[1]) * 1024 ** "_KMGT".indexOf(m[2] || "_");
}

/** Fails naming both lists whole (a failed step shows only the message, where vitest elides). */
function expectList(actual: string[], expected: string[], what: string): void {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) throw new Error(`${what}: got [${actual.join(", ")}], expected [${expected.join(", ")}]`);
}

/** Fails with where two byte ranges first differ (an `expect` on buffers would print both). */
function expectSameBytes(actual: Buffer, expected: Buffer, what: string): void {
  if (actual.equals(expected)) return;
  let i = 0;
  while (i < Math.min(actual.length, expected.length) && actual[i] === expected[i]) i++;
  throw new Error(
    actual.length === expected.length ? `${what}: first difference at byte ${i}` : `${what}: ${actual.length} bytes, ${expected.length} expected`,
  );
}

it("exports the disk over NVMe/TCP when booted into the storage-target profile", async () => {
  const { vm, ssh } = await s.restore("a", image, { ports: [NVME_TCP_PORT] });
  const hostPort = vm.config.forwards[String(NVME_TCP_PORT)] ?? 0;
  await s.step("nothing answers NVMe/TCP in normal operation (the check can fail)", async () => {
    expect(await nvmeTcpHandshake(hostPort)).toBe(false);
  });
  await s.step("select the storage-target profile for one boot", () => bootProfileOnce(ssh, "storage-target"));
  const mark = vm.serialMark();
  await ssh.exec("sudo -n systemctl reboot &").catch(() => undefined);
  ssh.close();
  await s.step("storage target mode starts in the initrd", () =>
    vm.waitForConsole(/Reached target .*Storage Target Mode/, { mark, timeoutMs: BOOT_TIMEOUT_MS }),
  );
  // systemd-storagetm 257 picks its TCP port itself and prints it, with the subsystem's NQN.
  const listening = await s.step("systemd-storagetm exports the disk and says where", async () => {
    const m = await vm.waitForConsole(/(nqn\.\S+\.vda) \(\/dev\/vda\)[\s\S]*?Listening on ipv4 \(port (\d+)\)/, { mark, timeoutMs: 120_000 });
    return { nqn: m[1] ?? "", port: Number(m[2]) };
  });
  const target = { port: await vm.forward(listening.port) };

  // storagetm.c (v257): NQN "nqn.2023-10.io.systemd:storagetm.<app-specific machine id>.<device>",
  // serial the first 20 characters of another app-specific id; the machine ID is the SMBIOS UUID
  // (systemd.machine_id=firmware).
  const machineId = vm.config.uuid;
  const nqn = `nqn.2023-10.io.systemd:storagetm.${appSpecificId(machineId, "b4f94e52b8e245db88846e2ec3f4ef18")}.vda`;
  await s.step("the discovery controller lists the disk's subsystem, named from the machine ID", async () => {
    // The port can lag a moment behind the message; a fresh discovery connection is cheap.
    const entries = await poll("a discovery log from the target", () => discover(target), { timeoutMs: 60_000, intervalMs: 2000 });
    // One NVM subsystem (subtype 2) over TCP (trtype 3) on the port storagetm printed; besides it
    // at most the discovery subsystem's own entry (subtype 3).
    expectList(
      entries.filter((e) => e.subnqn !== DISCOVERY_NQN).map((e) => `subtype ${e.subtype} trtype ${e.trtype} port ${e.trsvcid} ${e.subnqn}`),
      [`subtype 2 trtype 3 port ${listening.port} ${nqn}`],
      "discovery log entries",
    );
    expect(listening.nqn).toBe(nqn);
  });

  const ns = await s.step("connect to the subsystem, enable the controller, identify the namespace, open an I/O queue", () => NvmeNamespace.open(target, nqn));
  s.defer(async () => ns.close());
  const blocks = ns.info.blocks;
  await s.step("the namespace is the VM's whole disk, described by the image", async () => {
    expect(ns.info.blockSize).toBe(SECTOR);
    expect(ns.size).toBe(sizeBytes(vm.config.diskSize));
    expect(ns.controller.subnqn).toBe(nqn);
    expect(ns.controller.serial).toBe(appSpecificId(machineId, "397f4dbf1ebf466db3cb45b80d495bc1").slice(0, 20));
    // storagetm names the model after the disk's model and the os-release IMAGE_ID (a virtio disk
    // has no model), the firmware revision after IMAGE_VERSION (at most 8 characters).
    expect(ns.controller.model).toContain(image.id);
    expect(ns.controller.firmware).toBe(image.version.slice(0, 8));
  });

  const fd = openSync(image.image, "r");
  s.defer(async () => closeSync(fd));
  const built = readAt(fd, 0, GPT_SECTORS * SECTOR);
  const builtLba = (n: number) => built.subarray(n * SECTOR, (n + 1) * SECTOR);

  const head = await s.step(`read LBA 0-${GPT_SECTORS - 1} over NVMe/TCP`, () => ns.read(0, GPT_SECTORS * SECTOR));
  const lba = (n: number) => head.subarray(n * SECTOR, (n + 1) * SECTOR);
  const gpt = await s.step("LBA 0-33: the built image's protective MBR and GPT, grown to the disk by first boot", async () => {
    // LBA 0, protective MBR (UEFI 2.10 §5.2.3): as built, except the size of its 0xEE partition
    // (LBA count at byte 458), which now covers the bigger disk.
    expect(lba(0).readUInt16BE(510)).toBe(0x55aa);
    expect(lba(0).readUInt8(450)).toBe(0xee);
    const mbr = Buffer.from(builtLba(0));
    mbr.writeUInt32LE(Math.min(blocks - 1, 0xffffffff), 458);
    expectSameBytes(lba(0), mbr, "LBA 0 (protective MBR)");

    // LBA 1, GPT header (UEFI 2.10 §5.3.2): its CRC32 and the entry array's hold; the backup
    // header (AlternateLBA, 32) is on the disk's last LBA, LastUsableLBA (48) as far from it as
    // in the image, the entry array's CRC (88) is new. Everything else is as built (disk GUID,
    // entry array location, count and size).
    const header = lba(1);
    expect(header.subarray(0, 8).toString("latin1")).toBe("EFI PART");
    const headerSize = header.readUInt32LE(12);
    const zeroedCrc = Buffer.from(header.subarray(0, headerSize));
    zeroedCrc.writeUInt32LE(0, 16);
    expect(header.readUInt32LE(16)).toBe(crc32(zeroedCrc));
    expect(Number(header.readBigUInt64LE(32))).toBe(blocks - 1);
    const builtHeader = builtLba(1);
    expect(Number(header.readBigUInt64LE(32) - header.readBigUInt64LE(48))).toBe(Number(builtHeader.readBigUInt64LE(32) - builtHeader.readBigUInt64LE(48)));
    const entriesLba = Number(header.readBigUInt64LE(72));
    const entriesLength = header.readUInt32LE(80) * header.readUInt32LE(84);
    expect((entriesLba * SECTOR + entriesLength) / SECTOR).toBeLessThanOrEqual(GPT_SECTORS);
    const entries = head.subarray(entriesLba * SECTOR, entriesLba * SECTOR + entriesLength);
    expect(header.readUInt32LE(88)).toBe(crc32(entries));
    const expectedHeader = Buffer.from(builtHeader);
    expectedHeader.writeUInt32LE(header.readUInt32LE(16), 16); // HeaderCRC32, checked above
    expectedHeader.writeBigUInt64LE(header.readBigUInt64LE(32), 32); // AlternateLBA, checked above
    expectedHeader.writeBigUInt64LE(header.readBigUInt64LE(48), 48); // LastUsableLBA, checked above
    expectedHeader.writeUInt32LE(header.readUInt32LE(88), 88); // PartitionEntryArrayCRC32, checked above
    expectSameBytes(header, expectedHeader, "LBA 1 (GPT header)");

    // The image's partition entries are untouched (same GUIDs, bounds, attributes, labels)...
    const entrySize = header.readUInt32LE(84);
    const builtEntries = built.subarray(entriesLba * SECTOR, entriesLba * SECTOR + IMAGE_PARTITIONS * entrySize);
    expectSameBytes(entries.subarray(0, IMAGE_PARTITIONS * entrySize), builtEntries, `the image's ${IMAGE_PARTITIONS} partition entries`);
    // ... and the table names the partitions we expect, in order, inside the usable space, apart.
    const table = parseGpt((offset, length) => head.subarray(offset, offset + length));
    if (!table) throw new Error("no GPT in LBA 0-33");
    expectList(
      table.partitions.map((p) => `${p.typeUuid} ${p.label}`),
      EXPECTED_PARTITIONS.map((p) => `${p.type} ${p.label}`),
      "partition entries (type GUID, label)",
    );
    const usableEnd = (Number(header.readBigUInt64LE(48)) + 1) * SECTOR;
    const byOffset = [...table.partitions].sort((a, b) => a.offset - b.offset);
    byOffset.forEach((p, i) => {
      expect(p.offset + p.size, `partition ${p.index} ends inside the usable space`).toBeLessThanOrEqual(usableEnd);
      const next = byOffset[i + 1];
      if (next) expect(p.offset + p.size, `partition ${p.index} ends before partition ${next.index}`).toBeLessThanOrEqual(next.offset);
    });
    return { table, entries, headerCrc: header.readUInt32LE(88) };
  });

  await s.step("the last 33 LBAs: the backup GPT header and entry array, matching the primary", async () => {
    const tail = await ns.read((blocks - 33) * SECTOR, 33 * SECTOR);
    const backup = tail.subarray(32 * SECTOR);
    expect(backup.subarray(0, 8).toString("latin1")).toBe("EFI PART");
    expect(Number(backup.readBigUInt64LE(24))).toBe(blocks - 1); // MyLBA
    expect(Number(backup.readBigUInt64LE(32))).toBe(1); // AlternateLBA: the primary
    expect(backup.readUInt32LE(88)).toBe(gpt.headerCrc);
    const entriesLba = Number(backup.readBigUInt64LE(72));
    const start = (entriesLba - (blocks - 33)) * SECTOR;
    expectSameBytes(tail.subarray(start, start + gpt.entries.length), gpt.entries, "the backup partition entry array");
  });

  await s.step("root partition bytes read over NVMe/TCP equal the built image's", async () => {
    const root = gpt.table.partitions.find((p) => p.label === `${image.id}_${image.version}`);
    if (!root) throw new Error("no root partition");
    // The root file system is EROFS (superblock at byte 1024: magic, log2 of the block size at
    // +12, block count at +36): compare its first MiB and eight windows spread over the rest, so
    // most samples hold data rather than the slot's zero padding, plus the partition's last window.
    const sb = readAt(fd, root.offset + 1024, 64);
    expect(sb.readUInt32LE(0)).toBe(0xe0f5e1e2);
    const fsBytes = Math.min(sb.readUInt32LE(36) * 2 ** sb.readUInt8(12), root.size);
    const WINDOW = 256 * 1024;
    const windows = [{ offset: 0, length: 1024 * 1024 }];
    for (let i = 1; i <= 8; i++) windows.push({ offset: Math.floor((fsBytes * i) / 9 / SECTOR) * SECTOR, length: WINDOW });
    windows.push({ offset: root.size - WINDOW, length: WINDOW });
    for (const w of windows) {
      const got = await ns.read(root.offset + w.offset, w.length);
      expectSameBytes(got, readAt(fd, root.offset + w.offset, w.length), `root partition bytes ${w.offset}-${w.offset + w.length - 1}`);
    }
  });
});
