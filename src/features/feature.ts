// What an appliance feature is: its keys in appliance.toml and what it renders into the mkosi tree.
import type { z } from "zod";
import type { Appliance } from "../definition/schema.js";
import type { Problem } from "../errors.js";
import type { MkosiTree } from "../generator/tree.js";

export interface FeatureContext {
  /** Absolute directory of the appliance definition; relative paths in it resolve here. */
  dir: string;
  /** The definition file, for problem locations. */
  file: string;
  /** Line of a dotted key in the definition, when it was written there. */
  lineOf(path: readonly (string | number)[]): number | undefined;
}

export interface Feature {
  /** Short name, shown in docs. */
  name: string;
  /** One sentence for the reference. */
  summary: string;
  /** Top-level keys (a key may be a table of its own). */
  keys: z.ZodRawShape;
  /** Keys under [features]: on/off switches. */
  toggles: z.ZodRawShape;
  /** Checks that need more than types: files that must exist, limits across keys. */
  check?(a: Appliance, ctx: FeatureContext): Problem[];
  /** Checks that read other features' keys too; run only once the whole definition is valid. */
  crossCheck?(a: Appliance, ctx: FeatureContext): Problem[];
  /** Writes this feature's part of the mkosi tree. */
  render(a: Appliance, tree: MkosiTree, ctx: FeatureContext): void;
}
