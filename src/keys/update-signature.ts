// Checking what the update key signed, with nothing but its public half: the fleet server's check of
// the indexes a release carries, and the tests'. Signing is update-key.ts's alone, so a module that
// checks signatures never reaches the private key.
import * as openpgp from "openpgp";

/** The fingerprint of an armored public key, as `basalt release` records it (upper-case hex). */
export async function publicKeyFingerprint(publicKeyArmored: string): Promise<string> {
  const key = await openpgp.readKey({ armoredKey: publicKeyArmored });
  return key.getFingerprint().toUpperCase();
}

/** Checks a detached signature, binary (`.gpg`) or armored (`.asc`), against the public key; false on any mismatch. */
export async function verifyDetached(publicKeyArmored: string, data: Buffer, signature: Buffer | string): Promise<boolean> {
  try {
    const verificationKeys = await openpgp.readKey({ armoredKey: publicKeyArmored });
    const result = await openpgp.verify({
      message: await openpgp.createMessage({ binary: data }),
      signature:
        typeof signature === "string"
          ? await openpgp.readSignature({ armoredSignature: signature })
          : await openpgp.readSignature({ binarySignature: signature }),
      verificationKeys,
    });
    if (!result.signatures.length) return false;
    // Every signature in the file must be good: gpg on the device would stop at a bad one.
    for (const s of result.signatures) await s.verified;
    return true;
  } catch {
    return false;
  }
}
