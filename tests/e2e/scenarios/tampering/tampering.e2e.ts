// Tampering: dm-verity turns one flipped byte in a file's data into an I/O error on read, and a
// root file system that no longer matches the roothash= on the UKI command line is not mounted.
import { closeSync, openSync, readdirSync, readSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, expect, inject, it } from "vitest";
import { readGpt } from "../../../../src/inspect/gpt.js";
import type { Vm } from "../../../../src/vm/machine.js";
import type { BuiltImage } from "../../harness/image.js";
import { never } from "../../harness/poll.js";
import { BOOT_TIMEOUT_MS, Scenario, sh, shFails, tool } from "../../harness/scenario.js";

const image = inject("sharedImage");
const s = new Scenario("tampering");
afterAll(() => s.finish());

// A file nothing reads during boot, so the first read happens in the test.
const VICTIM = "/usr/bin/sha512sum";

function rootOffset(img: BuiltImage): number {
  const root = readGpt(img.image).partitions.find((p) => p.type === "root");
  if (!root) throw new Error("no root partition in the image");
  return root.offset;
}

/** Byte offset of a file's first data block inside the root file system, from dump.erofs. */
async function fileDataOffset(img: BuiltImage, path: string): Promise<number> {
  const dir = dirname(img.image);
  const split = readdirSync(dir).find((n) => /\.root-x86-64\.[0-9a-f-]+\.raw$/.test(n));
  if (!split) throw new Error("no root partition artifact next to the image");
  const out = await tool(["dump.erofs", `--path=${path}`, "-e", join(dir, split)]);
  const m = /^\s*0:\s+\d+\.\.\s*\d+\s*\|\s*\d+\s*:\s*(\d+)\.\./m.exec(out);
  if (!m?.[1]) throw new Error(`dump.erofs shows no extent for ${path}:\n${out}`);
  return Number(m[1]);
}

/** Flips every bit of one byte of the running VM's disk, in its overlay (the built image stays intact). */
async function flipByte(vm: Vm, img: BuiltImage, offset: number): Promise<void> {
  const fd = openSync(img.image, "r");
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, offset);
  closeSync(fd);
  const flipped = (b.readUInt8(0) ^ 0xff).toString(16).padStart(2, "0");
  const out = await vm.diskIo(`write -P 0x${flipped} ${offset} 1`);
  if (!/wrote 1\/1 bytes/.test(out)) throw new Error(`qemu-io did not write the byte: ${out.trim()}`);
}

it("fails reads of a file whose data was altered on the disk", async () => {
  const { vm, ssh } = await s.restore("file", image);
  await s.step(`flip one byte in the data of ${VICTIM} (nothing has read it since boot)`, async () =>
    flipByte(vm, image, rootOffset(image) + (await fileDataOffset(image, VICTIM)) + 100),
  );
  await s.step("reading the altered file is an I/O error", async () => {
    const r = await shFails(ssh, `cat ${VICTIM} > /dev/null`);
    expect(r.stderr).toMatch(/Input\/output error/);
    await sh(ssh, "cat /usr/bin/sha256sum > /dev/null");
    expect(await sh(ssh, "sudo -n dmesg | grep -c 'verity.*corrupted' || true")).not.toBe("0");
  });
  ssh.close();
});

it("does not mount a root file system that does not match the roothash", async () => {
  const { vm, ssh } = await s.restore("root", image);
  // The EROFS superblock: every mount reads it first (the running system read it at its boot).
  await s.step("flip one byte in the root file system's superblock", () => flipByte(vm, image, rootOffset(image) + 1024 + 16));
  const mark = vm.serialMark();
  await ssh.exec("sudo -n systemctl reboot &").catch(() => undefined);
  ssh.close();
  await s.step("dm-verity reports the corruption on the next boot", () =>
    vm.waitForConsole(/device-mapper: verity: .*corrupted/, { mark, timeoutMs: BOOT_TIMEOUT_MS }),
  );
  await s.step("mounting the root fails", () =>
    vm.waitForConsole(/Failed to mount sysroot\.mount|Dependency failed for .*initrd-root-fs|emergency/i, { mark, timeoutMs: 120_000 }),
  );
  await s.step("the system never comes up: no multi-user target, no sshd, no SSH, for a whole minute", () =>
    never(
      "the system coming up",
      async () => {
        if (/Reached target .*Multi-User System|Started .*ssh\.service/.test(vm.serialSince(mark))) return true;
        (await vm.waitForSsh(4000)).close();
        return true;
      },
      { windowMs: 60_000, intervalMs: 5000 },
    ),
  );
});
