// Keys of an appliance, kept in DIR/keys/ (git-ignored, 0600): the verity key that signs the
// root-verity-sig partition, the Secure Boot db key that signs systemd-boot and the UKI, the OpenPGP
// update key that signs release indexes, and the SSH login key `basalt vm ssh` uses.
import { webcrypto } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
// @peculiar/x509 resolves its ASN.1 classes through tsyringe, which needs the reflect polyfill first.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { UserError } from "../errors.js";
import { ensureLoginKey, type LoginKeyPaths, loginKeyPaths } from "./login-key.js";
import { ensureUpdateKey, type UpdateKeyPaths, updateKeyPaths } from "./update-key.js";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export const KEY_PAIRS = ["verity", "db"] as const;
export type KeyPairName = (typeof KEY_PAIRS)[number];

export interface KeySet {
  dir: string;
  dev: boolean;
  verity: { key: string; certificate: string };
  db: { key: string; certificate: string };
  /** OpenPGP key that signs update indexes (SHA256SUMS). */
  update: UpdateKeyPaths;
  /** SSH key that logs in to the appliance (`basalt vm ssh`) where the definition authorizes it. */
  login: LoginKeyPaths;
}

export interface KeysMeta {
  dev: boolean;
  created: string;
  commonName: string;
}

const ALG = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256", publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
const YEARS_VALID = 10;

export function keysDir(applianceDir: string): string {
  return join(applianceDir, "keys");
}

function pathsOf(dir: string, name: KeyPairName) {
  return { key: join(dir, `${name}.key`), certificate: join(dir, `${name}.crt`) };
}

async function createPair(commonName: string): Promise<{ keyPem: string; certPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as CryptoKeyPair;
  const notBefore = new Date();
  const notAfter = new Date(notBefore);
  notAfter.setFullYear(notAfter.getFullYear() + YEARS_VALID);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
      .toString("hex")
      .replace(/^[89a-f]/, "1"),
    name: `CN=${commonName}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: ALG,
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", keys.privateKey));
  const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8
    .toString("base64")
    .replace(/(.{64})/g, "$1\n")
    .replace(/\n$/, "")}\n-----END PRIVATE KEY-----\n`;
  return { keyPem, certPem: `${cert.toString("pem")}\n` };
}

/**
 * Creates a key set in `dir`. A development set there is replaced; a real one only with `force`
 * (images signed with it would no longer verify). A login key already there is kept: it signs
 * nothing, and VMs booted earlier still accept it.
 */
export async function createKeySet(dir: string, options: { dev: boolean; commonName: string; force?: boolean }): Promise<KeySet> {
  const existing = keySetInfo(dir);
  if (existing && !existing.dev && !options.force) {
    throw new UserError(`${dir} already holds a key set`, "pass --force to replace it (images signed with the old keys will no longer verify)");
  }
  const staging = `${dir}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true, mode: 0o700 });
  try {
    for (const name of KEY_PAIRS) {
      const label = name === "db" ? "Secure Boot db" : "verity";
      const { keyPem, certPem } = await createPair(`${options.commonName} ${label}${options.dev ? " (development)" : ""}`);
      const p = pathsOf(staging, name);
      writeFileSync(p.key, keyPem, { mode: 0o600 });
      writeFileSync(p.certificate, certPem, { mode: 0o644 });
    }
    await ensureUpdateKey(staging, options.commonName);
    if (!existsSync(loginKeyPaths(dir).key)) ensureLoginKey(loginKeyPaths(staging).key, `${options.commonName} login`);
    const meta: KeysMeta = { dev: options.dev, created: new Date().toISOString(), commonName: options.commonName };
    writeFileSync(join(staging, "keys.json"), `${JSON.stringify(meta, null, 2)}\n`);
    // Never committed, even when the appliance lives in its own repository.
    writeFileSync(join(staging, ".gitignore"), "*\n");
    // File by file, keys.json last (it marks a complete set): other keys kept in DIR/keys stay.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(staging).sort((a, b) => Number(a === "keys.json") - Number(b === "keys.json"))) {
      renameSync(join(staging, name), join(dir, name));
    }
    rmSync(staging, { recursive: true, force: true });
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }
  const set = loadKeySet(dir) as KeySet;
  // A login key kept from before may have lost its public half.
  ensureLoginKey(set.login.key, `${options.commonName} login`);
  return set;
}

/** What keys.json says of the key set in `dir` (development or not), without loading it; undefined when there is none. */
export function keySetInfo(dir: string): KeysMeta | undefined {
  const metaPath = join(dir, "keys.json");
  return existsSync(metaPath) ? (JSON.parse(readFileSync(metaPath, "utf8")) as KeysMeta) : undefined;
}

/** Loads a key set, or undefined when there is none; checks that private keys are private. */
export function loadKeySet(dir: string): KeySet | undefined {
  const meta = keySetInfo(dir);
  if (!meta) return undefined;
  const set: KeySet = {
    dir,
    dev: meta.dev,
    verity: pathsOf(dir, "verity"),
    db: pathsOf(dir, "db"),
    update: updateKeyPaths(dir),
    login: loginKeyPaths(dir),
  };
  for (const name of KEY_PAIRS) {
    for (const f of [set[name].key, set[name].certificate]) {
      if (!existsSync(f)) throw new UserError(`key set ${dir} is incomplete: ${f} is missing`, "recreate it with basalt keys init --force");
    }
    // A private key readable by others is fixed rather than used as is.
    chmodSync(set[name].key, 0o600);
  }
  for (const f of [set.update.key, set.login.key]) if (existsSync(f)) chmodSync(f, 0o600);
  return set;
}

/**
 * Adds what a key set made by an older Basalt lacks: the update signing key, the login key.
 * Returns what was added, as the CLI names it (empty when the set was complete).
 */
export async function completeKeySet(set: KeySet, commonName: string): Promise<string[]> {
  const added: string[] = [];
  if (!existsSync(set.update.key) || !existsSync(set.update.publicKey)) added.push(`the update signing key (${set.update.key})`);
  await ensureUpdateKey(set.dir, commonName);
  if (!existsSync(set.login.key)) added.push(`the login key (${set.login.key})`);
  ensureLoginKey(set.login.key, `${commonName} login`);
  return added;
}
