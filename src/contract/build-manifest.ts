// manifest.json of a build (DIR/out/<version>/): what `basalt build` produced, read back by
// `basalt release`, the VM harness and the benchmarks.
import { z } from "zod";
import { imageId, sha256Hex, version } from "./ids.js";

export const BUILD_FORMAT = 1;

export const buildArtifactSchema = z.strictObject({
  name: z.string().min(1).max(255),
  kind: z.enum(["disk", "uki", "root", "root-verity", "root-verity-sig"]),
  size: z.number().int().nonnegative(),
  sha256: sha256Hex,
});

export const buildManifestSchema = z.strictObject({
  format: z.literal(BUILD_FORMAT),
  id: imageId,
  version,
  /** Signed with a development key set: releases refuse it. */
  devSigned: z.boolean(),
  roothash: z.string().regex(/^[0-9a-f]{64}$/),
  mkosiVersion: z.string(),
  artifacts: z.array(buildArtifactSchema),
  /** Every Debian package in the image with its version (mkosi's manifest). */
  packages: z.array(z.strictObject({ name: z.string(), version: z.string() })),
});

export type BuildArtifact = z.infer<typeof buildArtifactSchema>;
export type BuildManifest = z.infer<typeof buildManifestSchema>;
