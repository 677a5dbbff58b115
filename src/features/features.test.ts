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

  it("lets the definition choose when systemd-boot enrolls the Secure Boot keys", () => {
    const loader = (t: ReturnType<typeof render>) => file(t, "image/efi/loader/loader.conf");
    expect(loader(render(""))).toContain("secure-boot-enroll if-safe\n");
    expect(file(render(""), "mkosi.conf")).toContain("SecureBootAutoEnroll=yes");
    expect(loader(render('[boot]\nsecure_boot_enroll = "force"\n'))).toContain("secure-boot-enroll force\n");
    const off = render('[boot]\nsecure_boot_enroll = "off"\n');
    expect(loader(off)).toContain("secure-boot-enroll off\n");
    // No signed key updates on the ESP when nothing may enroll them.
    expect(file(off, "mkosi.conf")).toContain("SecureBootAutoEnroll=no");
  });

  it("passes raw mkosi settings through last", () => {
    const t = render('[mkosi.Content]\nEnvironment = ["A=1"]\n');
    expect(file(t, "mkosi.conf.d/90-passthrough.conf")).toContain("[Content]\nEnvironment=\n        A=1");
  });

  it("adds the user's kernel arguments after Basalt's", () => {
    const conf = file(render('[kernel]\ncmdline = ["quiet"]\n'), "mkosi.conf") ?? "";
    expect(conf.indexOf("systemd.machine_id=firmware")).toBeLessThan(conf.indexOf("quiet"));
  });

  it("ships sysupdate transfers only with an update URL, matching the names releases and slots use", () => {
    expect([...render("").keys()].some((k) => k.includes("sysupdate.d"))).toBe(false);
    const t = render('[update]\nurl = "http://updates.example:8080/"\nchannel = "beta"\n');
    const root = file(t, "image/usr/lib/sysupdate.d/10-root.transfer") ?? "";
    expect(root).toContain("Path=http://updates.example:8080/v1/beta/%M/%a/%m/%A/");
    expect(root).toContain("MatchPattern=demo_@v.root-%a.@u.raw.xz");
    expect(root).toContain("MatchPattern=demo_@v\n");
    expect(file(t, "image/usr/lib/sysupdate.d/11-root-verity.transfer")).toContain("MatchPattern=demo_@v_v\n");
    expect(file(t, "image/usr/lib/sysupdate.d/12-root-verity-sig.transfer")).toContain("MatchPattern=demo_@v.root-%a-verity-sig.@u.raw.xz");
    const uki = file(t, "image/usr/lib/sysupdate.d/90-uki.transfer") ?? "";
    expect(uki).toContain("MatchPattern=demo_@v+@l-@d.efi demo_@v+@l.efi demo_@v.efi");
    expect(uki).toContain("TriesLeft=3");
    expect(uki).toContain("InstancesMax=2");
    expect(t.get("image/etc/systemd/import-pubring.gpg")).toMatchObject({ kind: "copy", optional: true });
    expect(file(t, "image/usr/lib/systemd/system/systemd-sysupdate.service.d/10-basalt.conf")).toContain("Requires=boot-complete.target");
  });

  it("refuses an update URL without a second slot, naming the key", () => {
    expect(() => render('[update]\nurl = "http://u.example/"\n[features]\nab_updates = false\n')).toThrow(/update\.url: updates need features\.ab_updates/);
    expect(() => render('[update]\nurl = "ftp://u.example/"\n')).toThrow(/update\.url/);
  });

  it("requires health for a good boot: sshd, network, named units, no failed units", () => {
    const h = render('[health]\nunits = ["myapp.service"]\n');
    const script = file(h, "image/usr/lib/basalt/health-check") ?? "";
    expect(script).toContain("for unit in ssh.socket myapp.service; do");
    expect(script).toContain("systemd-networkd-wait-online --any --timeout=120");
    expect(file(h, "image/usr/lib/systemd/system/basalt-health.service")).toContain("RequiredBy=boot-complete.target");
    expect(file(h, "image/usr/lib/systemd/system-preset/10-basalt.preset")).toContain("enable systemd-boot-check-no-failures.service");
  });

  it("reports to the fleet server only with an update URL, and not when switched off", () => {
    expect(render("").has("image/usr/lib/systemd/system/basalt-report@.service")).toBe(false);
    const on = render('[update]\nurl = "http://updates.example:8080/"\nchannel = "beta"\n');
    expect(file(on, "image/usr/lib/basalt/report")).toContain('"http://updates.example:8080/v1/beta/$IMAGE_ID/x86-64/$machine/report"');
    expect(file(on, "image/usr/lib/systemd/system/basalt-report@.service")).toContain("ImportCredential=basalt.report-token");
    expect(file(on, "image/usr/lib/sysupdate.d/90-uki.transfer")).toContain("Path=http://updates.example:8080/v1/beta/%M/%a/%m/%A/%b/");
    const off = render('[update]\nurl = "http://updates.example:8080/"\n[report]\nenabled = false\n');
    expect(off.has("image/usr/lib/basalt/report")).toBe(false);
    expect(off.has("image/usr/lib/sysupdate.d/90-uki.transfer")).toBe(true);
  });
});
