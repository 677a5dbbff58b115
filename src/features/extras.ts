// Escape hatches: a tree of extra files copied into the image, and raw mkosi settings.
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { z } from "zod";
import { relativePath } from "../definition/types.js";
import type { Problem } from "../errors.js";
import type { Feature } from "./feature.js";

const mkosiValue = z.union([z.string(), z.boolean(), z.number(), z.array(z.string())]);

export const keys = {
  extra_files: relativePath().optional().describe("Directory whose content is copied into the image root (like mkosi.extra); applied after Basalt's files."),
  mkosi: z
    .record(
      z.string().regex(/^[A-Z][A-Za-z]+$/, "expected an mkosi section name such as Content"),
      z.record(z.string().regex(/^[A-Z][A-Za-z]+$/, "expected an mkosi setting name such as Packages"), mkosiValue),
    )
    .default({})
    .describe("Raw mkosi settings, by section: [mkosi.Content] Environment = [...]. Applied last; Basalt does not check them."),
} satisfies z.ZodRawShape;

export const toggles = {} satisfies z.ZodRawShape;

export const feature: Feature = {
  name: "extras",
  summary: "Extra files copied into the image and raw mkosi settings passed through.",
  keys,
  toggles,
  check(a, ctx) {
    const problems: Problem[] = [];
    if (a.extra_files !== undefined) {
      const path = resolve(ctx.dir, a.extra_files);
      if (!existsSync(path) || !statSync(path).isDirectory()) {
        problems.push({ file: ctx.file, line: ctx.lineOf(["extra_files"]), key: "extra_files", message: `directory not found: ${path}` });
      }
    }
    return problems;
  },
  render(a, tree, ctx) {
    if (a.extra_files !== undefined) {
      // A second extra tree after Basalt's own, so the user's files win.
      tree.copy("extra-files", resolve(ctx.dir, a.extra_files), a.extra_files);
      tree.set("Content", "ExtraTrees", ["extra-files"]);
    }
    const sections = Object.entries(a.mkosi);
    if (sections.length) {
      tree.ini(
        "mkosi.conf.d/90-passthrough.conf",
        sections.map(([name, entries]) => [name, Object.entries(entries)]),
      );
    }
  },
};
