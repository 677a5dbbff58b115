// release.json: what `basalt release` writes, `basalt publish` uploads and the server checks every
// uploaded byte against. The server takes it from the network, so every field is bounded here.
//
// A release carries every index a device can be shown for it, signed when the release is made: its
// own (its files) and one that offers nothing. The server only chooses among the indexes of its
// releases and never signs, so the manifest carries them whole, with the public key they verify
// against (the server's integrity check; the devices are the real verifiers).
import { z } from "zod";
import { parseArtifactName } from "./artifacts.js";
import { imageId, releaseFileName, sha256Hex, version } from "./ids.js";

export const RELEASE_FORMAT = 2;

const bytes = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const releaseFileSchema = z.strictObject({
  name: releaseFileName,
  kind: z.enum(["uki", "root", "root-verity", "root-verity-sig"]),
  size: bytes,
  sha256: sha256Hex,
  /** Size once decompressed: what is written to the slot. */
  installedSize: bytes,
});

/** What a signed index offers: the release's files, or nothing (what a device with nothing to do is shown). */
export type IndexOffers = "release" | "nothing";

/**
 * The files of a signed index. Devices always fetch `SHA256SUMS` and its binary signature
 * `SHA256SUMS.gpg` (systemd-pull 257), newer clients the armored `SHA256SUMS.asc`; the index that
 * offers nothing is kept beside the release's own under its own names, and served under those.
 */
export function indexFileNames(offers: IndexOffers): { index: string; signature: string; armored: string } {
  const index = offers === "release" ? "SHA256SUMS" : "SHA256SUMS.nothing";
  return { index, signature: `${index}.gpg`, armored: `${index}.asc` };
}

/** The names devices fetch an index and its signatures under. */
export const DEVICE_INDEX_FILES = Object.values(indexFileNames("release")) as [string, string, string];

/**
 * What the index that offers nothing lists: systemd-pull 257 fails on an empty body ("Premature
 * connection termination", seen in the VM suite), so the index names one file no transfer pattern
 * can match (patterns start with `<image id>_`; this name has no '_'), with the SHA-256 of no bytes.
 */
export const NOTHING_OFFERED = { name: "basalt-nothing-offered", sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" } as const;

/** An index or signature is a few lines: one per release file, at most 64. */
const MAX_INDEX_BYTES = 64 * 1024;

/** One file of a signed index, listed like a release file and carried whole (base64): it needs no upload of its own. */
const indexFile = (name: string) =>
  z.strictObject({
    name: z.literal(name),
    size: bytes.max(MAX_INDEX_BYTES),
    sha256: sha256Hex,
    base64: z.base64().max(Math.ceil(MAX_INDEX_BYTES / 3) * 4),
  });

const signedIndex = (offers: IndexOffers) => {
  const names = indexFileNames(offers);
  return z.strictObject({ index: indexFile(names.index), signature: indexFile(names.signature), armored: indexFile(names.armored) });
};

export const releaseIndexesSchema = z.strictObject({ release: signedIndex("release"), nothing: signedIndex("nothing") });

/** The armored public half of the update key; a private key has another armor header and is refused. */
const publicKey = z
  .string()
  .max(16 * 1024)
  .regex(/^-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n/, "expected an armored OpenPGP public key (-----BEGIN PGP PUBLIC KEY BLOCK-----)");

const manifestFields = {
  format: z.literal(RELEASE_FORMAT, {
    error: `expected ${RELEASE_FORMAT}: an older Basalt's release.json carries no signed indexes; run 'basalt release' again with this version`,
  }),
  id: imageId,
  version,
  devSigned: z.boolean(),
  roothash: z.string().regex(/^[0-9a-f]{64}$/, "expected the root hash: 64 lowercase hexadecimal digits"),
  /** The fingerprint of `publicKey`. */
  signingKey: z.string().min(1).max(200),
  publicKey,
  files: z.array(releaseFileSchema).min(1).max(64),
  indexes: releaseIndexesSchema,
  createdAt: z.string().max(64),
};

export const releaseManifestSchema = z.strictObject(manifestFields).superRefine((m, ctx) => {
  const seen = new Set<string>();
  for (const [i, f] of m.files.entries()) {
    if (seen.has(f.name)) ctx.addIssue({ code: "custom", path: ["files", i, "name"], message: `${f.name} is listed twice` });
    seen.add(f.name);
    // A file the image's transfers would read as another version or kind must not ride along.
    const a = parseArtifactName(f.name);
    if (!a || a.id !== m.id || a.version !== m.version || a.kind !== f.kind) {
      ctx.addIssue({ code: "custom", path: ["files", i, "name"], message: `not the name of a ${f.kind} file of ${m.id} ${m.version}` });
    }
  }
});

/**
 * A release manifest as a server recorded it: the fields and their formats, without the rules a new
 * upload must pass as well (so that what was recorded before those rules existed still reads), and
 * from format 1 on, whose releases carried neither signed indexes nor their public key: those can
 * no longer be offered.
 */
export const recordedManifestSchema = z.strictObject({
  ...manifestFields,
  format: z.union([z.literal(1), z.literal(RELEASE_FORMAT)]),
  publicKey: publicKey.optional(),
  indexes: releaseIndexesSchema.optional(),
});

export type ReleaseFile = z.infer<typeof releaseFileSchema>;
export type ReleaseIndexes = z.infer<typeof releaseIndexesSchema>;
export type ReleaseManifest = z.infer<typeof releaseManifestSchema>;
export type RecordedManifest = z.infer<typeof recordedManifestSchema>;
