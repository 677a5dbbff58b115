// The update signing key: an OpenPGP key (openpgp.js) whose detached signature over SHA256SUMS
// systemd-pull checks with gpg on the device. Its public half becomes the image's only trusted key.
// Only `basalt release` signs (and the key set commands make the key); checking is update-signature.ts.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as openpgp from "openpgp";
import { UserError } from "../errors.js";
import { publicKeyFingerprint } from "./update-signature.js";

export interface UpdateKeyPaths {
  /** Armored private key, 0600. */
  key: string;
  /** Armored public key. */
  publicKey: string;
  /** The public key as a binary keyring: what the image ships as /etc/systemd/import-pubring.gpg. */
  keyring: string;
}

export function updateKeyPaths(keysDir: string): UpdateKeyPaths {
  return { key: join(keysDir, "update.pgp.key"), publicKey: join(keysDir, "update.pgp.pub"), keyring: join(keysDir, "update.pgp.keyring") };
}

/** Creates the update key in `keysDir` unless it is there. Version 4 EdDSA (legacy) keys: the gpg of Debian 12 and 13 knows neither v6 keys nor RFC 9580 Ed25519. */
export async function ensureUpdateKey(keysDir: string, name: string): Promise<UpdateKeyPaths> {
  const paths = updateKeyPaths(keysDir);
  if (existsSync(paths.key) && existsSync(paths.publicKey)) {
    if (!existsSync(paths.keyring)) writeFileSync(paths.keyring, await publicKeyring(paths));
    return paths;
  }
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: "ecc",
    curve: "curve25519Legacy",
    userIDs: [{ name: `${name} updates` }],
    format: "armored",
  });
  writeFileSync(paths.key, privateKey, { mode: 0o600 });
  writeFileSync(paths.publicKey, publicKey, { mode: 0o644 });
  writeFileSync(paths.keyring, await publicKeyring(paths));
  return paths;
}

/** The public key as binary OpenPGP packets: the keyring format `gpg --keyring` reads. */
export async function publicKeyring(paths: UpdateKeyPaths): Promise<Buffer> {
  const key = await openpgp.readKey({ armoredKey: readFileSync(paths.publicKey, "utf8") });
  return Buffer.from(key.toPublic().write());
}

export function fingerprint(paths: UpdateKeyPaths): Promise<string> {
  return publicKeyFingerprint(readFileSync(paths.publicKey, "utf8"));
}

/** A detached signature over `data`, binary (SHA256SUMS.gpg) and armored (SHA256SUMS.asc). */
export async function signDetached(paths: UpdateKeyPaths, data: Buffer): Promise<{ binary: Buffer; armored: string }> {
  if (!existsSync(paths.key)) throw new UserError(`no update signing key at ${paths.key}`, "run 'basalt keys init DIR'");
  const signingKeys = await openpgp.readPrivateKey({ armoredKey: readFileSync(paths.key, "utf8") });
  const message = await openpgp.createMessage({ binary: data });
  const binary = await openpgp.sign({ message, signingKeys, detached: true, format: "binary" });
  const armored = await openpgp.sign({ message, signingKeys, detached: true, format: "armored" });
  return { binary: Buffer.from(binary), armored };
}
