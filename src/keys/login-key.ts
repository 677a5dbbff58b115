// The appliance's login key: an ed25519 SSH key pair in DIR/keys/ (private half 0600, git-ignored
// with the rest of the key set) that `basalt vm ssh` logs in with when the definition authorizes
// its public half (authorized_keys = "keys/login_ed25519.pub").
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ssh2 from "ssh2";
import { UserError } from "../errors.js";

// ssh2 is CommonJS: its helpers come from the default export under ESM.
const { utils } = ssh2;

const LOGIN_KEY = "login_ed25519";

export interface LoginKeyPaths {
  /** OpenSSH private key, 0600. */
  key: string;
  /** The public key line, for an authorized_keys file. */
  publicKey: string;
}

export function loginKeyPaths(keysDir: string): LoginKeyPaths {
  return { key: join(keysDir, LOGIN_KEY), publicKey: join(keysDir, `${LOGIN_KEY}.pub`) };
}

/**
 * Creates an ed25519 login key pair at `privatePath` unless one is there (then it is kept, its
 * public half written again if it went missing); returns the public key line.
 */
export function ensureLoginKey(privatePath: string, comment: string): string {
  const publicPath = `${privatePath}.pub`;
  if (!existsSync(privatePath)) {
    const pair = utils.generateKeyPairSync("ed25519", { comment });
    writeFileSync(privatePath, pair.private, { mode: 0o600 });
    writeFileSync(publicPath, `${pair.public}\n`);
  }
  chmodSync(privatePath, 0o600);
  if (!existsSync(publicPath)) {
    const parsed = utils.parseKey(readFileSync(privatePath));
    if (parsed instanceof Error) throw new UserError(`${privatePath}: not an SSH private key (${parsed.message})`, "remove it to have a new login key made");
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (!key) throw new UserError(`${privatePath}: no SSH key in it`, "remove it to have a new login key made");
    writeFileSync(publicPath, `${key.type} ${key.getPublicSSH().toString("base64")} ${comment}\n`);
  }
  return readFileSync(publicPath, "utf8").trim();
}

/** The key blob of each OpenSSH public key line in `text` (options and comments left out). */
export function publicKeyBlobs(text: string): string[] {
  return text
    .split("\n")
    .map((l) => /(?:^|\s)(?:ssh-|ecdsa-|sk-)\S+\s+([A-Za-z0-9+/=]+)/.exec(l.trim())?.[1])
    .filter((b): b is string => Boolean(b));
}

/** The public key blob of an OpenSSH private key file, or undefined when it is not one. */
export function publicKeyBlobOf(privatePath: string): string | undefined {
  if (!existsSync(privatePath)) return undefined;
  const parsed = utils.parseKey(readFileSync(privatePath));
  const key = parsed instanceof Error ? undefined : Array.isArray(parsed) ? parsed[0] : parsed;
  return key?.isPrivateKey() ? key.getPublicSSH().toString("base64") : undefined;
}
