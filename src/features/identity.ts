// Who the appliance is: id, version and the Debian release it is built from.
import { z } from "zod";
import * as ids from "../contract/ids.js";
import type { Problem } from "../errors.js";
import type { Feature } from "./feature.js";

// GPT partition labels hold 36 UTF-16 characters; the longest label Basalt writes is `<id>_<version>_s`.
const GPT_LABEL_MAX = 36;
const LABEL_SUFFIX = "_s";
export const keys = {
  id: ids.imageId.describe("Image id: os-release IMAGE_ID, file and partition names, the hostname prefix."),
  version: ids.version.describe("Image version: os-release IMAGE_VERSION; updates go to strictly newer versions."),
  release: z.enum(["trixie", "forky", "sid"]).default("trixie").describe("Debian release the image is built from (systemd 257 or newer is required)."),
  description: z
    .string()
    .regex(/^[A-Za-z0-9 .,()_-]{1,64}$/, "expected up to 64 letters, digits, spaces and .,()_-")
    .optional()
    .describe("Human-readable name shown in the boot menu (os-release PRETTY_NAME)."),
} satisfies z.ZodRawShape;

export const toggles = {} satisfies z.ZodRawShape;

export const feature: Feature = {
  name: "identity",
  summary: "The appliance's name, version and base distribution release.",
  keys,
  toggles,
  check(a, ctx) {
    const problems: Problem[] = [];
    const label = `${a.id}_${a.version}${LABEL_SUFFIX}`;
    if (label.length > GPT_LABEL_MAX) {
      problems.push({
        file: ctx.file,
        line: ctx.lineOf(["version"]),
        key: "version",
        message: `id and version together are too long for a GPT partition label ("${label}" has ${label.length} characters, at most ${GPT_LABEL_MAX})`,
      });
    }
    return problems;
  },
  render(a, tree) {
    tree
      .set("Distribution", "Distribution", "debian")
      .set("Distribution", "Release", a.release)
      .set("Distribution", "Architecture", ids.IMAGE_ARCHITECTURE)
      .set("Output", "ImageId", a.id)
      .set("Output", "ImageVersion", a.version)
      .set("Output", "Output", `${a.id}_${a.version}`)
      .set("Output", "Format", "disk")
      .set("Output", "ManifestFormat", "json")
      .set("Output", "CompressOutput", false);
    if (a.description) {
      tree.postinstall(`# PRETTY_NAME names the boot menu entry.`, `sed -i 's|^PRETTY_NAME=.*|PRETTY_NAME="${a.description}"|' /usr/lib/os-release`);
    }
  },
};
