import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fixture } from "../../tests/support/fixtures.js";
import { completeKeySet, createKeySet, loadKeySet } from "./keys.js";
import { ensureLoginKey } from "./login-key.js";

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

  it("brings an SSH login key: private half 0600, public half a line for authorized_keys that ssh-keygen derives too", async () => {
    const dir = join(fixture({}), "keys");
    const set = await createKeySet(dir, { dev: true, commonName: "demo" });
    expect(set.login.key).toBe(join(dir, "login_ed25519"));
    expect(statSync(set.login.key).mode & 0o777).toBe(0o600);
    const line = readFileSync(set.login.publicKey, "utf8").trim();
    expect(line).toMatch(/^ssh-ed25519 AAAA[A-Za-z0-9+/=]+ demo login$/);
    // Another implementation reads the private key: OpenSSH's own.
    const derived = execFileSync("ssh-keygen", ["-y", "-f", set.login.key], { encoding: "utf8" }).trim();
    expect(derived.split(" ").slice(0, 2)).toEqual(line.split(" ").slice(0, 2));
  });

  it("replaces a development set without --force (the README's keys init after the Quick start); a real one only when forced", async () => {
    const dir = join(fixture({}), "keys");
    const dev = await createKeySet(dir, { dev: true, commonName: "demo" });
    const devVerity = readFileSync(dev.verity.key, "utf8");
    const devLogin = readFileSync(dev.login.key, "utf8");
    const real = await createKeySet(dir, { dev: false, commonName: "demo" });
    expect(real.dev).toBe(false);
    expect(readFileSync(real.verity.key, "utf8")).not.toBe(devVerity);
    // The login key signs nothing; a VM booted with the development image still accepts it.
    expect(readFileSync(real.login.key, "utf8")).toBe(devLogin);
    await expect(createKeySet(dir, { dev: false, commonName: "demo" })).rejects.toThrow(/already holds a key set/);
    await expect(createKeySet(dir, { dev: true, commonName: "demo" })).rejects.toThrow(/already holds a key set/);
    await expect(createKeySet(dir, { dev: true, commonName: "demo", force: true })).resolves.toMatchObject({ dev: true });
  });

  it("keeps other files in the keys directory (a login key made before)", async () => {
    const dir = join(fixture({}), "keys");
    mkdirSync(dir, { recursive: true });
    ensureLoginKey(join(dir, "login_ed25519"), "made-before");
    const before = readFileSync(join(dir, "login_ed25519"), "utf8");
    await createKeySet(dir, { dev: true, commonName: "demo" });
    expect(readFileSync(join(dir, "login_ed25519"), "utf8")).toBe(before);
    expect(readFileSync(join(dir, "login_ed25519.pub"), "utf8")).toContain("made-before");
    expect(loadKeySet(dir)?.dev).toBe(true);
  });

  it("completes a set made before update and login keys existed, and says what it added", async () => {
    const dir = join(fixture({}), "keys");
    const set = await createKeySet(dir, { dev: false, commonName: "demo" });
    for (const f of [set.update.key, set.update.publicKey, set.login.key, set.login.publicKey]) rmSync(f);
    const added = await completeKeySet(loadKeySet(dir) as NonNullable<ReturnType<typeof loadKeySet>>, "demo");
    expect(added).toEqual([expect.stringMatching(/^the update signing key/), expect.stringMatching(/^the login key/)]);
    expect(await completeKeySet(set, "demo")).toEqual([]);
    expect(statSync(set.login.key).mode & 0o777).toBe(0o600);
  });
});
