// Loads appliance.toml: TOML syntax, schema, then each feature's checks; every problem is collected
// and reported together as `file:line key: message`.
import { existsSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { z } from "zod";
import { imageId } from "../contract/ids.js";
import { DefinitionError, type Problem, UserError } from "../errors.js";
import type { FeatureContext } from "../features/feature.js";
import { features } from "../features/registry.js";
import { type Appliance, applianceSchema } from "./schema.js";
import { type LocatedToml, loadLocatedToml } from "./toml.js";

export const DEFINITION_FILE = "appliance.toml";

export interface LoadedAppliance {
  appliance: Appliance;
  context: FeatureContext;
}

/** The definition file for a directory (or the file itself). */
export function resolveDefinitionPath(dirOrFile: string): { dir: string; file: string } {
  const abs = resolve(dirOrFile);
  if (existsSync(abs) && statSync(abs).isFile()) return { dir: resolve(abs, ".."), file: abs };
  const file = join(abs, DEFINITION_FILE);
  if (!existsSync(file)) {
    throw new UserError(`no ${DEFINITION_FILE} in ${abs}`, `create one with: basalt init ${dirOrFile}`);
  }
  return { dir: abs, file };
}

function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith("..") ? rel : file;
}

function issueProblems(issue: z.core.$ZodIssue, toml: LocatedToml, file: string): Problem[] {
  const path = issue.path.filter((p): p is string | number => typeof p !== "symbol");
  const dotted = (p: (string | number)[]) => p.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    return issue.keys.map((k) => ({ file, line: toml.lineOf([...path, k]), key: dotted([...path, k]), message: "unknown key" }));
  }
  let message = issue.message;
  if (issue.code === "invalid_type" && issue.input === undefined) message = "required key is missing";
  else if (issue.code === "invalid_type") message = `expected ${issue.expected}, got ${describe(issue.input)}`;
  return [{ file, line: toml.lineOf(path), key: dotted(path), message }];
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  if (typeof v === "object") return "a table";
  return `${typeof v} ${JSON.stringify(v)}`;
}

export function loadAppliance(dirOrFile: string): LoadedAppliance {
  const { dir, file } = resolveDefinitionPath(dirOrFile);
  const shown = displayPath(file);
  const toml = loadLocatedToml(file);
  const context: FeatureContext = { dir, file: shown, lineOf: toml.lineOf };
  const parsed = applianceSchema.safeParse(toml.value, { reportInput: true });
  const problems = parsed.success ? [] : parsed.error.issues.flatMap((i) => issueProblems(i, toml, shown));
  // Checks read only their own feature's keys, so each runs when those keys are valid, even if
  // others are not: a missing file is reported together with a wrong type elsewhere.
  for (const f of features) {
    if (!f.check) continue;
    const own = z.object({ ...f.keys, features: z.object(f.toggles).prefault({}) }).safeParse(toml.value);
    if (own.success) problems.push(...f.check(own.data as unknown as Appliance, context));
  }
  // Rules across features need the whole, valid definition.
  if (parsed.success) for (const f of features) problems.push(...(f.crossCheck?.(parsed.data as Appliance, context) ?? []));
  if (!parsed.success || problems.length) throw new DefinitionError(sortProblems(problems));
  return { appliance: parsed.data as Appliance, context };
}

/**
 * A definition's directory and id, read before the rest is checked: what a key set is made for.
 * The keys come first because the definition may authorize the key set's own login key
 * (`authorized_keys = "keys/login_ed25519.pub"`). A definition whose id is wrong is reported whole.
 */
export function loadApplianceId(dirOrFile: string): { dir: string; id: string } {
  const { dir, file } = resolveDefinitionPath(dirOrFile);
  const value = loadLocatedToml(file).value as Record<string, unknown> | undefined;
  const id = imageId.safeParse(value?.id);
  if (id.success) return { dir, id: id.data };
  loadAppliance(dirOrFile);
  throw new DefinitionError([{ file: displayPath(file), key: "id", message: "not a valid appliance id" }]);
}

function sortProblems(problems: Problem[]): Problem[] {
  return [...problems].sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || a.key.localeCompare(b.key));
}
