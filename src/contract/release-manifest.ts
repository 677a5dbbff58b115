// release.json: what `basalt release` writes, `basalt publish` uploads and the server checks every
// uploaded byte against. The server takes it from the network, so every field is bounded here.
import { z } from "zod";
import { parseArtifactName } from "./artifacts.js";
import { imageId, releaseFileName, sha256Hex, version } from "./ids.js";

export const RELEASE_FORMAT = 1;

const bytes = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const releaseFileSchema = z.strictObject({
  name: releaseFileName,
  kind: z.enum(["uki", "root", "root-verity", "root-verity-sig"]),
  size: bytes,
  sha256: sha256Hex,
  /** Size once decompressed: what is written to the slot. */
  installedSize: bytes,
});

export const releaseManifestSchema = z
  .strictObject({
    format: z.literal(RELEASE_FORMAT),
    id: imageId,
    version,
    devSigned: z.boolean(),
    roothash: z.string().regex(/^[0-9a-f]{64}$/, "expected the root hash: 64 lowercase hexadecimal digits"),
    signingKey: z.string().min(1).max(200),
    files: z.array(releaseFileSchema).min(1).max(64),
    createdAt: z.string().max(64),
  })
  .superRefine((m, ctx) => {
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

export type ReleaseFile = z.infer<typeof releaseFileSchema>;
export type ReleaseManifest = z.infer<typeof releaseManifestSchema>;
