// The signed indexes a release carries (release.json `indexes`): its own, listing exactly its files,
// and one that offers nothing, each with a binary and an armored detached signature made with the
// appliance's update key. Every index a device can be shown is one of these, so the update server
// never needs the key.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type IndexOffers, indexFileNames, type ReleaseIndexes } from "../contract/release-manifest.js";
import { fingerprint, signDetached, type UpdateKeyPaths } from "../keys/update-key.js";
import { renderIndex, renderSha256Sums, type SumEntry } from "./sha256sums.js";

export interface SignedIndexes {
  indexes: ReleaseIndexes;
  /** The armored public key the signatures verify against. */
  publicKey: string;
  /** Its fingerprint. */
  signingKey: string;
}

const entry = (name: string, bytes: Buffer) => ({
  name,
  size: bytes.length,
  sha256: createHash("sha256").update(bytes).digest("hex"),
  base64: bytes.toString("base64"),
});

async function signIndex<O extends IndexOffers>(offers: O, index: Buffer, key: UpdateKeyPaths) {
  const names = indexFileNames(offers);
  const sig = await signDetached(key, index);
  return {
    index: entry(names.index, index),
    signature: entry(names.signature, sig.binary),
    armored: entry(names.armored, Buffer.from(sig.armored)),
  };
}

/** Renders and signs both indexes of a release made of `files`. */
export async function signReleaseIndexes(files: SumEntry[], key: UpdateKeyPaths): Promise<SignedIndexes> {
  const [release, nothing] = await Promise.all([signIndex("release", Buffer.from(renderSha256Sums(files)), key), signIndex("nothing", renderIndex([]), key)]);
  return { indexes: { release, nothing }, publicKey: readFileSync(key.publicKey, "utf8"), signingKey: await fingerprint(key) };
}

/** Writes the indexes' files into a release directory, byte for byte what the manifest carries. */
export function writeIndexFiles(dir: string, indexes: ReleaseIndexes): void {
  for (const signed of [indexes.release, indexes.nothing]) {
    for (const f of [signed.index, signed.signature, signed.armored]) writeFileSync(join(dir, f.name), Buffer.from(f.base64, "base64"));
  }
}
