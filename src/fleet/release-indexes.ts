// What the server checks of the signed indexes a release carries before it records them: the
// release's own index lists exactly its files with their SHA-256, the other offers nothing, and
// every signature verifies against the public key the release carries. The server holds no key of
// its own, so this catches a release whose index and signature do not belong together, not an
// impostor: a release signed with another key passes here and is refused by every device, whose
// keyring is the appliance's.
import { createHash } from "node:crypto";
import { type IndexOffers, NOTHING_OFFERED, type RecordedManifest } from "../contract/release-manifest.js";
import { UserError } from "../errors.js";
import { publicKeyFingerprint, verifyDetached } from "../keys/update-signature.js";
import { parseSha256Sums } from "../release/sha256sums.js";
import type { SignedIndex } from "./db/fleet-db.js";

/** Why a release recorded before releases carried their indexes (format 1) cannot be offered, and what to do. */
export function unsignedReleaseError(image: string, version: string): UserError {
  return new UserError(
    `${image} ${version} was published without its signed indexes (by a Basalt whose server signed them) and cannot be offered`,
    `run 'basalt release' and 'basalt publish' for it again with this version of Basalt`,
  );
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A content address of an index and its signatures, each part length-prefixed. */
function indexId(parts: Buffer[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(`${p.length}:`).update(p);
  return h.digest("hex");
}

/** The bytes of one listed file, checked against its listed size and SHA-256. */
function bytesOf(what: string, f: { name: string; size: number; sha256: string; base64: string }): Buffer {
  const b = Buffer.from(f.base64, "base64");
  if (b.length !== f.size) throw new UserError(`${what}: ${f.name} holds ${b.length} bytes, the release manifest says ${f.size}`);
  if (sha256(b) !== f.sha256) throw new UserError(`${what}: ${f.name} does not have the SHA-256 the release manifest gives it`);
  return b;
}

/**
 * The release's two signed indexes, checked, as the server records them; a UserError naming the
 * file that is wrong otherwise.
 */
export async function checkReleaseIndexes(m: RecordedManifest): Promise<SignedIndex[]> {
  const what = `${m.id} ${m.version}`;
  if (!m.indexes || !m.publicKey) throw unsignedReleaseError(m.id, m.version);
  let signingKey: string;
  try {
    signingKey = await publicKeyFingerprint(m.publicKey);
  } catch (e) {
    throw new UserError(`${what}: the release's public key does not read (${(e as Error).message})`);
  }
  if (signingKey !== m.signingKey.toUpperCase()) {
    throw new UserError(`${what}: signingKey ${m.signingKey} is not the fingerprint of the release's public key (${signingKey})`);
  }
  const out: SignedIndex[] = [];
  for (const offers of ["release", "nothing"] as const satisfies IndexOffers[]) {
    const files = m.indexes[offers];
    const index = bytesOf(what, files.index);
    const signature = bytesOf(what, files.signature);
    const armored = bytesOf(what, files.armored);
    let entries: { name: string; sha256: string }[];
    try {
      entries = parseSha256Sums(index.toString("utf8"));
    } catch (e) {
      throw new UserError(`${what}: ${files.index.name} is not an index devices would read (${(e as Error).message})`);
    }
    const expected = offers === "release" ? m.files : [NOTHING_OFFERED];
    const listed = new Map(entries.map((e) => [e.name, e.sha256]));
    for (const f of expected) {
      const sum = listed.get(f.name);
      if (sum === undefined) throw new UserError(`${what}: ${files.index.name} does not list ${f.name}`);
      if (sum !== f.sha256) throw new UserError(`${what}: ${files.index.name} gives ${f.name} another SHA-256 than the release manifest`);
    }
    const extra = entries.find((e) => !expected.some((f) => f.name === e.name));
    if (extra || entries.length !== expected.length) {
      throw new UserError(
        `${what}: ${files.index.name} lists ${extra?.name ?? "a file twice"}, which is not ${offers === "release" ? `a file of ${what}` : "the entry of an index that offers nothing"}`,
      );
    }
    for (const [f, sig] of [
      [files.signature, signature],
      [files.armored, armored.toString("utf8")],
    ] as const) {
      if (!(await verifyDetached(m.publicKey, index, sig))) {
        throw new UserError(`${what}: ${f.name} is not a signature of ${files.index.name} by the release's key ${signingKey}`);
      }
    }
    out.push({
      image: m.id,
      version: m.version,
      offers,
      id: indexId([index, signature, armored]),
      index,
      signature,
      armored: armored.toString("utf8"),
      signingKey,
    });
  }
  return out;
}
