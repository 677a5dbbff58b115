// basalt release on a small stand-in build output: xz artifacts that decompress to the built bytes,
// an index the client's parser accepts, and a signature that the device's gpg (the tools tree's,
// invoked exactly as systemd-pull 257 does) accepts, and rejects once anything changes.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { BuildArtifact, BuildManifest } from "../../src/contract/build-manifest.js";
import { NOTHING_OFFERED } from "../../src/contract/release-manifest.js";
import { createKeySet } from "../../src/keys/keys.js";
import { ensureUpdateKey, publicKeyring, signDetached } from "../../src/keys/update-key.js";
import { createRelease } from "../../src/release/release.js";
import { parseSha256Sums } from "../../src/release/sha256sums.js";
import { createReporter } from "../../src/report/reporter.js";
import { ensureMkosi, type MkosiTool } from "../../src/toolchain/mkosi.js";
import { runTool } from "../../src/toolchain/tools-run.js";
import { toolsTreePath } from "../../src/toolchain/tools-tree.js";
import { appliance } from "../support/fixtures.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const reporter = createReporter({ live: false, quiet: true });
let mkosi: MkosiTool;
let tools: string;

/** A stand-in build output: the artifacts a real build lists, small, with the root mostly zeros. */
function fakeBuild(dir: string, devSigned: boolean): Record<string, Buffer> {
  const out = join(dir, "out", "1.0");
  const bytes: Record<string, Buffer> = {
    "demo_1.0.efi": Buffer.from("MZ pretend UKI"),
    "demo_1.0.root-x86-64.11111111-2222-3333-4444-555555555555.raw": Buffer.concat([Buffer.from("erofs data"), Buffer.alloc(8 << 20)]),
    "demo_1.0.root-x86-64-verity.66666666-7777-8888-9999-000000000000.raw": Buffer.from("verity tree"),
    "demo_1.0.root-x86-64-verity-sig.aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee.raw": Buffer.from('{"rootHash":"00"}'),
  };
  const kinds = ["uki", "root", "root-verity", "root-verity-sig"];
  mkdirSync(out, { recursive: true });
  const artifacts = Object.entries(bytes).map(([name, b], i) => {
    writeFileSync(join(out, name), b);
    return { name, kind: kinds[i] as BuildArtifact["kind"], size: b.length, sha256: sha(b) };
  });
  writeFileSync(
    join(out, "manifest.json"),
    // Typed by the contract's schema, so that a field the build adds cannot be missing here.
    JSON.stringify({
      format: 1,
      id: "demo",
      version: "1.0",
      devSigned,
      roothash: "ab".repeat(32),
      mkosiVersion: "25.3",
      artifacts,
      packages: [],
    } satisfies BuildManifest),
  );
  return bytes;
}

/** gpg exactly as systemd-pull 257 calls it (pull-common.c), from the tools tree (Debian trixie's gpg). */
async function gpgVerify(keyring: string, sigFile: string, data: Buffer): Promise<boolean> {
  const home = mkdtempSync(join(tmpdir(), "basalt-gpghome-"));
  const r = await runTool(
    mkosi,
    tools,
    [
      "gpg",
      "--no-options",
      "--no-default-keyring",
      "--no-auto-key-locate",
      "--no-auto-check-trustdb",
      "--batch",
      "--trust-model=always",
      `--homedir=${home}`,
      `--keyring=${keyring}`,
      "--verify",
      sigFile,
      "-",
    ],
    { input: data, check: false },
  );
  return r.code === 0;
}

beforeAll(async () => {
  mkosi = (await ensureMkosi(reporter)) as MkosiTool;
  tools = toolsTreePath(mkosi);
});

describe("basalt release", () => {
  it("refuses an image signed with development keys unless told, and writes nothing", async () => {
    const dir = appliance('id = "demo"\nversion = "1.0"\n');
    await createKeySet(join(dir, "keys"), { dev: true, commonName: "demo" });
    fakeBuild(dir, true);
    await expect(createRelease(dir, { reporter })).rejects.toThrow(/development keys/);
    expect(existsSync(join(dir, "out", "releases"))).toBe(false);
  });

  it("compresses the partitions, signs both indexes, and the device's gpg accepts only the untouched index", async () => {
    const dir = appliance('id = "demo"\nversion = "1.0"\n');
    const set = await createKeySet(join(dir, "keys"), { dev: false, commonName: "demo" });
    const built = fakeBuild(dir, false);
    const { dir: rel, manifest } = await createRelease(dir, { reporter });

    const names = manifest.files.map((f) => f.name).sort();
    expect(names).toEqual([
      "demo_1.0.efi",
      "demo_1.0.root-x86-64-verity-sig.aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee.raw.xz",
      "demo_1.0.root-x86-64-verity.66666666-7777-8888-9999-000000000000.raw.xz",
      "demo_1.0.root-x86-64.11111111-2222-3333-4444-555555555555.raw.xz",
    ]);
    const root = manifest.files.find((f) => f.kind === "root");
    expect(root?.installedSize).toBe(8 * 1024 * 1024 + 10);
    expect(root?.size).toBeLessThan(10_000); // 8 MiB of zeros cost almost nothing
    for (const f of manifest.files.filter((x) => x.name.endsWith(".xz"))) {
      const r = await runTool(mkosi, tools, ["sh", "-c", `xz -dc '${join(rel, f.name)}' | sha256sum`], { capture: true });
      expect(r.stdout.split(" ")[0]).toBe(sha(built[f.name.slice(0, -3)] as Buffer));
    }

    const index = readFileSync(join(rel, "SHA256SUMS"));
    const entries = parseSha256Sums(index.toString("utf8"));
    for (const e of entries) expect(sha(readFileSync(join(rel, e.name)))).toBe(e.sha256);

    const keyring = join(rel, "..", "import-pubring.gpg");
    writeFileSync(keyring, await publicKeyring(set.update));
    expect(await gpgVerify(keyring, join(rel, "SHA256SUMS.gpg"), index)).toBe(true);
    expect(await gpgVerify(keyring, join(rel, "SHA256SUMS.asc"), index)).toBe(true);
    const tampered = Buffer.from(index.toString("utf8").replace(/^./, (c) => (c === "0" ? "1" : "0")));
    expect(await gpgVerify(keyring, join(rel, "SHA256SUMS.gpg"), tampered)).toBe(false);

    // The index a device with nothing to do is shown, signed alike; release.json carries both
    // indexes and their signatures byte for byte, and the public key they verify against.
    const nothing = readFileSync(join(rel, "SHA256SUMS.nothing"));
    expect(parseSha256Sums(nothing.toString("utf8"))).toEqual([NOTHING_OFFERED]);
    expect(await gpgVerify(keyring, join(rel, "SHA256SUMS.nothing.gpg"), nothing)).toBe(true);
    expect(await gpgVerify(keyring, join(rel, "SHA256SUMS.nothing.asc"), nothing)).toBe(true);
    for (const signed of [manifest.indexes.release, manifest.indexes.nothing]) {
      for (const f of [signed.index, signed.signature, signed.armored]) expect(readFileSync(join(rel, f.name)).toString("base64"), f.name).toBe(f.base64);
    }
    expect(manifest.publicKey).toBe(readFileSync(set.update.publicKey, "utf8"));

    // An index signed by another key is refused by the appliance's keyring.
    const other = await ensureUpdateKey(mkdtempSync(join(tmpdir(), "basalt-other-")), "intruder");
    const foreign = join(rel, "..", "foreign.gpg");
    writeFileSync(foreign, (await signDetached(other, index)).binary);
    expect(await gpgVerify(keyring, foreign, index)).toBe(false);
  });
});
