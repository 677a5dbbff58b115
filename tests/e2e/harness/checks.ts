// The first-boot promises, checked against real state in the guest. Shared by the first-boot
// scenario and the broken-guest scenario, which must see one of them fail.
import { expect } from "vitest";
import { expectedHostname } from "../../../src/features/hostname.js";
import { type Gpt, parseGpt } from "../../../src/inspect/gpt.js";
import type { Vm } from "../../../src/vm/machine.js";
import { passwordAccepted, type SshSession } from "../../../src/vm/ssh.js";
import type { BuiltImage } from "./image.js";
import { type Scenario, sh, shFails, waitBlessed } from "./scenario.js";

/**
 * The guest's partition table, read from the disk itself (its first 34 sectors: header and
 * entries), not from udev's copy of it, which lags behind a table sysupdate has just rewritten.
 */
export async function guestGpt(ssh: SshSession): Promise<Gpt> {
  const disk = Buffer.from(await sh(ssh, "sudo -n dd if=/dev/vda bs=512 count=34 iflag=direct status=none | base64 -w0"), "base64");
  const gpt = parseGpt((offset, length) => disk.subarray(offset, offset + length));
  if (!gpt) throw new Error("the guest's disk has no GPT");
  return gpt;
}

/** GPT partition labels of the guest's disk, sorted. */
export async function partitionLabels(ssh: SshSession): Promise<string[]> {
  return (await guestGpt(ssh)).partitions.map((p) => p.label).sort();
}

/** The device-mapper uuid behind a mount point (CRYPT-VERITY-…, CRYPT-LUKS2-…). */
export async function dmUuidOf(ssh: SshSession, mountpoint: string): Promise<string> {
  const source = await sh(ssh, `findmnt -no SOURCE ${mountpoint}`);
  const dm = await sh(ssh, `basename "$(readlink -f ${source})"`);
  return sh(ssh, `cat /sys/block/${dm}/dm/uuid`);
}

/** The UKI profile this boot came from: systemd-stub records its .profile section. */
export async function bootedProfile(ssh: SshSession): Promise<string> {
  const text = await sh(ssh, "cat /run/systemd/stub/profile 2>/dev/null || true");
  return /^ID="?([^"\n]+)"?$/m.exec(text)?.[1] ?? "";
}

/** A normal boot: the main profile (or its twin, see features/boot.ts), no reset, no target mode. */
export async function expectNormalBoot(ssh: SshSession): Promise<void> {
  expect(["main", "normal"]).toContain(await bootedProfile(ssh));
  const cmdline = await sh(ssh, "cat /proc/cmdline");
  expect(cmdline).not.toContain("systemd.factory_reset");
  expect(cmdline).not.toContain("rd.systemd.unit");
}

export async function checkFirstBoot(s: Scenario, vm: Vm, ssh: SshSession, image: BuiltImage): Promise<void> {
  await s.step("the first boot is a normal boot (not a factory reset)", () => expectNormalBoot(ssh));
  await s.step("/ is EROFS on dm-verity, read-only", async () => {
    const [source, fstype, options] = (await sh(ssh, "findmnt -no SOURCE,FSTYPE,OPTIONS /")).split(/\s+/);
    expect(source).toBe("/dev/mapper/root");
    expect(fstype).toBe("erofs");
    expect(options?.split(",")).toContain("ro");
    expect(await dmUuidOf(ssh, "/")).toMatch(/^CRYPT-VERITY-/);
    const cmdline = await sh(ssh, "cat /proc/cmdline");
    expect(cmdline).toMatch(/roothash=[0-9a-f]{64}/);
  });

  await s.step("/etc is read-only", async () => {
    const r = await shFails(ssh, "sudo -n touch /etc/basalt-e2e-probe");
    expect(r.stderr).toMatch(/Read-only file system/);
  });

  await s.step("/var is btrfs on LUKS2 with a TPM2 token", async () => {
    const [source, fstype] = (await sh(ssh, "findmnt -no SOURCE,FSTYPE /var")).split(/\s+/);
    expect(source).toBe("/dev/mapper/var");
    expect(fstype).toBe("btrfs");
    expect(await dmUuidOf(ssh, "/var")).toMatch(/^CRYPT-LUKS2-/);
    // The LUKS2 JSON header names the token systemd-cryptenroll/repart enrolled.
    const header = await sh(
      ssh,
      `sudo -n dd if=/dev/disk/by-partlabel/${image.id}_var bs=4096 skip=1 count=4 status=none | tr -d '\\000' | grep -o '"type":"systemd-tpm2"' | head -1`,
    );
    expect(header).toBe('"type":"systemd-tpm2"');
  });

  await s.step("the second A/B slot exists, empty", async () => {
    const labels = await partitionLabels(ssh);
    expect(labels.filter((l) => l === "_empty")).toHaveLength(3);
    expect(labels).toEqual(
      expect.arrayContaining([`${image.id}_${image.version}`, `${image.id}_${image.version}_v`, `${image.id}_${image.version}_s`, `${image.id}_var`]),
    );
  });

  await s.step("machine-id comes from the SMBIOS UUID, hostname from the machine-id", async () => {
    const machineId = await sh(ssh, "cat /etc/machine-id");
    expect(machineId).toBe(vm.config.uuid.replace(/-/g, "").toLowerCase());
    expect(await sh(ssh, "hostname")).toBe(expectedHostname(image.id, machineId));
  });

  await s.step("SSH: key login works (we are in), password login is refused", async () => {
    expect(await sh(ssh, "id -un")).toBe(image.user);
    const attempt = await passwordAccepted({ port: vm.sshPort, user: image.user }, "admin");
    expect(attempt.accepted).toBe(false);
    expect(await sh(ssh, "sudo -n sshd -T | grep -i '^passwordauthentication'")).toBe("passwordauthentication no");
    expect(await sh(ssh, "sudo -n sshd -T | grep -i '^authorizedkeysfile'")).toContain("/etc/authorized_keys");
  });

  await s.step("no getty on tty1; the info screen is there", async () => {
    const getty = await ssh.exec("systemctl is-active getty@tty1.service");
    expect(getty.stdout.trim()).not.toBe("active");
    expect(await sh(ssh, "systemctl is-active basalt-console-info.service")).toBe("active");
    // /dev/vcs1 is the text on tty1's screen.
    const screen = await sh(ssh, "sudo -n cat /dev/vcs1 | tr -s ' '");
    expect(screen).toContain(image.version);
  });

  await s.step("no unit failed; repart made the B slot and /var in the initrd (its journal says so), not later", async () => {
    expect(await sh(ssh, "systemctl --failed --plain --no-legend --no-pager")).toBe("");
    // systemd 257 tags what the initrd logged with _RUNTIME_SCOPE=initrd.
    const initrd = await sh(ssh, "sudo -n journalctl -b _RUNTIME_SCOPE=initrd -t systemd-repart --no-pager -o cat");
    expect(initrd).toContain("Applying changes to /dev/vda.");
    expect(initrd).toMatch(/Encrypting future partition \d+\.\.\./);
    expect(initrd).toMatch(/Formatting future partition \d+\./);
    expect(await sh(ssh, "sudo -n journalctl -b _RUNTIME_SCOPE=system -t systemd-repart --no-pager -o cat | grep -c 'Applying changes' || true")).toBe("0");
  });

  await s.step("no ordering cycle; the boot was assessed (boot-complete.target reached, the health check passed, blessed good)", async () => {
    // systemd resolves a cycle by skipping jobs, silently for `systemctl --failed`: the health check
    // and the blessing were once dropped that way.
    expect(await sh(ssh, "sudo -n journalctl -b --no-pager | grep -ci 'ordering cycle' || true")).toBe("0");
    // The first boot of a UKI built with tries left is counted: "good", not "clean".
    await waitBlessed(ssh, "good", 120_000);
    expect(await sh(ssh, "systemctl show -P Result basalt-health.service")).toBe("success");
  });

  await s.step("networkd holds a DHCP lease", async () => {
    const status = await sh(ssh, "networkctl status --no-pager --lines=0 2>/dev/null || true");
    expect(status).toMatch(/10\.0\.2\.15/);
    const leases = await sh(ssh, "ls /run/systemd/netif/leases/ | wc -l");
    expect(Number(leases)).toBeGreaterThan(0);
  });
}
