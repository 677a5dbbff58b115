import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ensureUpdateKey, signDetached } from "./update-key.js";
import { verifyDetached } from "./update-signature.js";

describe("update signing key", () => {
  it("is created once, private half 0600, and signs what verifies only unchanged", async () => {
    const dir = mkdtempSync(join(tmpdir(), "basalt-ukey-"));
    const paths = await ensureUpdateKey(dir, "demo");
    expect(statSync(paths.key).mode & 0o777).toBe(0o600);
    const again = await ensureUpdateKey(dir, "demo");
    expect(readFileSync(again.key, "utf8")).toBe(readFileSync(paths.key, "utf8"));
    const data = Buffer.from("abc  x.efi\n");
    const sig = await signDetached(paths, data);
    const pub = readFileSync(paths.publicKey, "utf8");
    expect(await verifyDetached(pub, data, sig.binary)).toBe(true);
    expect(await verifyDetached(pub, Buffer.from("abd  x.efi\n"), sig.binary)).toBe(false);
    const other = await ensureUpdateKey(mkdtempSync(join(tmpdir(), "basalt-ukey-")), "other");
    expect(await verifyDetached(readFileSync(other.publicKey, "utf8"), data, sig.binary)).toBe(false);
  });
});
