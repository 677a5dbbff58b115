// A real mkosi build of the example appliance (in a temporary copy), checked by basalt inspect,
// by systemd-dissect and systemd-repart from the tools tree, and by a tampering check.
import { execFileSync } from "node:child_process";
import { closeSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BuildResult, buildAppliance } from "../../src/build/build.js";
import { extractRoot, orderingCycles } from "../../src/build/units.js";
import { readGpt } from "../../src/inspect/gpt.js";
import { inspectImage } from "../../src/inspect/inspect.js";
import { createReporter } from "../../src/report/reporter.js";
import { ensureMkosi, type MkosiTool } from "../../src/toolchain/mkosi.js";
import { runTool } from "../../src/toolchain/tools-run.js";
import { toolsTreePath } from "../../src/toolchain/tools-tree.js";

const root = join(import.meta.dirname, "../..");
let dir: string;
let result: BuildResult;
let mkosi: MkosiTool;
let tools: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "basalt-build-"));
  cpSync(join(root, "examples/minimal"), dir, { recursive: true, filter: (src) => !/\/(out|keys)$/.test(src) });
  const reporter = createReporter({ live: false });
  const start = performance.now();
  result = await buildAppliance(dir, { reporter });
  console.log(`build: ${((performance.now() - start) / 1000).toFixed(0)} s`, reporter.timings.map((t) => `${t.phase} ${t.seconds.toFixed(0)}s`).join(", "));
  mkosi = (await ensureMkosi(reporter)) as MkosiTool;
  tools = toolsTreePath(mkosi);
});

afterAll(() => {
  if (dir && process.env.BASALT_KEEP !== "1") rmSync(dir, { recursive: true, force: true });
});

describe("basalt build examples/minimal", () => {
  it("writes every artifact with a matching SHA256SUMS and manifest", async () => {
    const sums = readFileSync(join(result.outDir, "SHA256SUMS"), "utf8").trim().split("\n");
    expect(sums).toHaveLength(5);
    // Another implementation than Basalt's checks the list: coreutils, as an operator would.
    const checked = execFileSync("sha256sum", ["--check", "--strict", "SHA256SUMS"], { cwd: result.outDir, encoding: "utf8" });
    expect(checked.trim().split("\n").sort()).toEqual(sums.map((l) => `${l.split(/\s+/)[1]}: OK`).sort());
    const m = JSON.parse(readFileSync(join(result.outDir, "manifest.json"), "utf8"));
    expect(m).toMatchObject({ id: "minimal", version: "1.0", devSigned: true });
    expect(m.roothash).toMatch(/^[0-9a-f]{64}$/);
    expect(m.packages.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["systemd", "openssh-server", "systemd-boot"]));
    expect(m.artifacts.map((a: { kind: string }) => a.kind).sort()).toEqual(["disk", "root", "root-verity", "root-verity-sig", "uki"]);
  });

  it("passes basalt inspect, root hash re-computed from the data", async () => {
    const r = await inspectImage(result.image, { deep: true });
    expect(r.problems).toEqual([]);
    expect(r.partitions.map((p) => [p.type, p.filesystem])).toEqual([
      ["esp", "vfat"],
      ["root", "erofs"],
      ["root-verity", "verity"],
      ["root-verity-sig", "json"],
    ]);
    expect(r.verity?.cmdlineRoothash).toBe(result.manifest.roothash);
    expect(r.verity?.deep?.treeMatches).toBe(true);
    const uki = r.ukis[0];
    expect(uki?.path).toBe("/EFI/Linux/minimal_1.0+3.efi");
    expect(uki?.osRelease).toMatchObject({ IMAGE_ID: "minimal", IMAGE_VERSION: "1.0" });
    expect(uki?.cmdline).toContain("systemd.machine_id=firmware");
    // "normal" first: see features/boot.ts (systemd-boot 257 may pick the first extra profile).
    expect(uki?.profiles.map((p) => p.id)).toEqual(["main", "normal", "factory-reset", "storage-target"]);
    expect(uki?.profiles.find((p) => p.id === "normal")?.cmdline).not.toContain("systemd.factory_reset");
    expect(uki?.profiles.find((p) => p.id === "factory-reset")?.cmdline).toContain("systemd.factory_reset=1");
  });

  it("is accepted by systemd-dissect", async () => {
    const out = await runTool(mkosi, tools, ["systemd-dissect", "--json=short", "--image-policy=*", "--no-legend", result.image], { check: false });
    const text = `${out.stdout}\n${out.stderr}`;
    expect(out.code, text).toBe(0);
    const j = JSON.parse(out.stdout);
    const designators = j.mounts.map((m: { designator: string }) => m.designator);
    expect(designators).toEqual(expect.arrayContaining(["esp", "root", "root-verity", "root-verity-sig"]));
    expect(j.mounts.find((m: { designator: string }) => m.designator === "root").fstype).toBe("erofs");
  });

  it("matches the on-device repart definitions (slot A kept, slot B and /var added)", async () => {
    const defs = join(dir, "out/plan/mkosi/image/usr/lib/repart.d");
    const out = await runTool(
      mkosi,
      tools,
      ["systemd-repart", "--dry-run=yes", "--no-pager", "--json=short", `--definitions=${defs}`, "--size=8G", "--offline=yes", result.image],
      { check: false },
    );
    expect(out.code, out.stderr).toBe(0);
    const plan = JSON.parse(out.stdout) as { type: string; label: string; activity: string }[];
    const rows = plan.map((p) => `${p.type.replace(/-x86-64/, "")}:${p.label}:${p.activity}`);
    expect(rows).toEqual([
      "root:minimal_1.0:unchanged",
      "root-verity:minimal_1.0_v:unchanged",
      "root-verity-sig:minimal_1.0_s:unchanged",
      "root:_empty:create",
      "root-verity:_empty:create",
      "root-verity-sig:_empty:create",
      "var:minimal_var:create",
      "esp:esp:unchanged",
    ]);
  });

  it("detects one flipped byte in the root file system", async () => {
    const copy = join(dir, "tampered.raw");
    copyFileSync(result.image, copy);
    const rootPart = readGpt(copy).partitions.find((p) => p.type === "root");
    const fd = openSync(copy, "r+");
    writeSync(fd, Buffer.from([0x5a]), 0, 1, (rootPart?.offset ?? 0) + 8192 + 17);
    closeSync(fd);
    const r = await inspectImage(copy, { deep: true });
    expect(r.ok).toBe(false);
    expect(r.problems).toContain("the root partition's data does not match its verity hash tree");
    rmSync(copy);
  });

  it("has no ordering cycle in its units, and the check finds one once a unit makes it", async () => {
    const scratch = mkdtempSync(join(dir, "units-"));
    const rootFs = join(scratch, "root");
    const partition = result.manifest.artifacts.find((a) => a.kind === "root")?.name ?? "";
    await extractRoot(mkosi, tools, join(result.outDir, partition), rootFs);
    expect(await orderingCycles(mkosi, tools, rootFs)).toEqual([]);
    // What once shipped: a unit wanted by multi-user.target but ordered after boot-complete.target,
    // which the health check orders after multi-user.target.
    writeFileSync(
      join(rootFs, "usr/lib/systemd/system/basalt-cycle-probe.service"),
      "[Unit]\nWants=boot-complete.target\nAfter=boot-complete.target\n[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    );
    mkdirSync(join(rootFs, "etc/systemd/system/multi-user.target.wants"), { recursive: true });
    symlinkSync("/usr/lib/systemd/system/basalt-cycle-probe.service", join(rootFs, "etc/systemd/system/multi-user.target.wants/basalt-cycle-probe.service"));
    const cycles = await orderingCycles(mkosi, tools, rootFs);
    expect(cycles.join("\n")).toMatch(/Found ordering cycle/);
    rmSync(scratch, { recursive: true, force: true });
  });
});
