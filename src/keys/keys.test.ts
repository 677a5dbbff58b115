import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fixture } from "../../tests/support/fixtures.js";
import { createKeySet, loadKeySet } from "./keys.js";

const pubkey = (args: string[], input: string) => execFileSync("openssl", args, { input }).toString();

describe("key sets", () => {
  it("creates private keys readable by the owner only, each matching its certificate", async () => {
    const dir = join(fixture({}), "keys");
    const set = await createKeySet(dir, { dev: true, commonName: "demo" });
    for (const pair of [set.verity, set.db]) {
      expect(statSync(pair.key).mode & 0o777).toBe(0o600);
      const fromKey = pubkey(["pkey", "-pubout"], readFileSync(pair.key, "utf8"));
      const fromCert = pubkey(["x509", "-noout", "-pubkey"], readFileSync(pair.certificate, "utf8"));
      expect(fromKey).toBe(fromCert);
    }
    expect(pubkey(["x509", "-noout", "-subject"], readFileSync(set.db.certificate, "utf8"))).toContain("demo Secure Boot db (development)");
    expect(readFileSync(join(dir, ".gitignore"), "utf8")).toBe("*\n");
    expect(loadKeySet(dir)?.dev).toBe(true);
  });

  it("refuses to replace a key set unless forced", async () => {
    const dir = join(fixture({}), "keys");
    await createKeySet(dir, { dev: false, commonName: "demo" });
    await expect(createKeySet(dir, { dev: false, commonName: "demo" })).rejects.toThrow(/already holds a key set/);
    await expect(createKeySet(dir, { dev: true, commonName: "demo", force: true })).resolves.toMatchObject({ dev: true });
  });

  it("keeps other files in the keys directory (a login key, an update key)", async () => {
    const dir = join(fixture({}), "keys");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "login_ed25519"), "private\n", { mode: 0o600 });
    await createKeySet(dir, { dev: true, commonName: "demo" });
    expect(readFileSync(join(dir, "login_ed25519"), "utf8")).toBe("private\n");
    expect(loadKeySet(dir)?.dev).toBe(true);
  });
});
