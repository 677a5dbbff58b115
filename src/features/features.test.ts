import { describe, expect, it } from "vitest";
import { appliance } from "../../tests/support/fixtures.js";
import { loadAppliance } from "../definition/load.js";
import { renderTree } from "../generator/plan.js";
import { verityHashSize } from "./disk.js";

const render = (toml: string) => renderTree(loadAppliance(appliance(`id = "demo"\nversion = "1.0"\n${toml}`)));
const file = (entries: ReturnType<typeof render>, path: string) => {
  const e = entries.get(path);
  return e?.kind === "file" ? e.content : undefined;
};

describe("features", () => {
  it("sizes the verity partition for the slot (1 GiB of data needs 2066 hash blocks)", () => {
    expect(verityHashSize(1024 ** 3)).toBe(9 * 1024 * 1024);
    expect(verityHashSize(256 * 1024 ** 2)).toBe(3 * 1024 * 1024);
  });

  it("adds slot B only with A/B updates", () => {
    expect(render("").has("image/usr/lib/repart.d/20-root-b.conf")).toBe(true);
    const off = render("[features]\nab_updates = false\n");
    expect(off.has("image/usr/lib/repart.d/20-root-b.conf")).toBe(false);
    expect(off.has("image/usr/lib/repart.d/10-root-a.conf")).toBe(true);
  });

  it("encrypts /var with the TPM2 only when asked", () => {
    expect(file(render(""), "image/usr/lib/repart.d/50-var.conf")).toContain("Encrypt=tpm2");
    expect(file(render(""), "image/etc/fstab")).toContain("/dev/mapper/var /var btrfs");
    const plain = render("[features]\nencrypted_var = false\n");
    expect(file(plain, "image/usr/lib/repart.d/50-var.conf")).not.toContain("Encrypt");
    expect(plain.has("image/etc/crypttab")).toBe(false);
    expect(file(plain, "image/etc/fstab")).toContain("/dev/disk/by-partlabel/demo_var /var btrfs");
  });

  it("masks every getty unless debug_login", () => {
    expect(render("").get("image/etc/systemd/system/getty@.service")).toEqual({ kind: "symlink", target: "/dev/null" });
    const debug = render("[features]\ndebug_login = true\n");
    expect(debug.has("image/etc/systemd/system/getty@.service")).toBe(false);
    expect(file(debug, "mkosi.postinst.chroot")).toContain("passwd --delete admin");
  });

  it("renders the UKI profiles that are switched on", () => {
    const both = render("[features]\nstorage_target = true\n");
    expect(file(both, "mkosi.uki-profiles/10-factory-reset.conf")).toContain("systemd.factory_reset=1");
    expect(file(both, "mkosi.uki-profiles/20-storage-target.conf")).toContain("rd.systemd.unit=storage-target-mode.target");
    expect(render("[features]\nfactory_reset = false\n").has("mkosi.uki-profiles/10-factory-reset.conf")).toBe(false);
  });

  it("puts boot counting into the UKI name", () => {
    expect(file(render(""), "mkosi.conf")).toContain("UnifiedKernelImageFormat=demo_1.0+&c");
    expect(file(render(""), "image/etc/kernel/tries")).toBe("3\n");
    const off = render("[boot]\ntries = 0\n");
    expect(file(off, "mkosi.conf")).toContain("UnifiedKernelImageFormat=demo_1.0\n");
    expect(off.has("image/etc/kernel/tries")).toBe(false);
  });

  it("passes raw mkosi settings through last", () => {
    const t = render('[mkosi.Content]\nEnvironment = ["A=1"]\n');
    expect(file(t, "mkosi.conf.d/90-passthrough.conf")).toContain("[Content]\nEnvironment=\n        A=1");
  });

  it("adds the user's kernel arguments after Basalt's", () => {
    const conf = file(render('[kernel]\ncmdline = ["quiet"]\n'), "mkosi.conf") ?? "";
    expect(conf.indexOf("systemd.machine_id=firmware")).toBeLessThan(conf.indexOf("quiet"));
  });
});
