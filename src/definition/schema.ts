// The appliance definition schema, composed from the keys every feature declares. Validation,
// the JSON Schema for editors and the key reference are all derived from it.
import { z } from "zod";
import { featureModules } from "../features/registry.js";

type Modules = (typeof featureModules)[number];
type UnionToIntersection<U> = (U extends unknown ? (x: U) => void : never) extends (x: infer I) => void ? I : never;
type Keys = UnionToIntersection<Modules["keys"]>;
type Toggles = UnionToIntersection<Modules["toggles"]>;

const keys = Object.assign({}, ...featureModules.map((m) => m.keys)) as Keys;
const toggles = Object.assign({}, ...featureModules.map((m) => m.toggles)) as Toggles;

export const applianceSchema = z.strictObject({
  ...keys,
  features: z.strictObject(toggles).prefault({}).describe("Feature switches."),
});

/** The definition as written in appliance.toml (optional keys, defaults not applied). */
export type ApplianceInput = z.input<typeof applianceSchema>;
/** The resolved definition every later stage reads: defaults applied, validated. */
export type Appliance = Readonly<z.output<typeof applianceSchema>>;

/** JSON Schema (draft 2020-12) for editors, e.g. via taplo or Even Better TOML. */
export function renderJsonSchema(): string {
  const schema = z.toJSONSchema(applianceSchema, { io: "input", target: "draft-2020-12" });
  return `${JSON.stringify({ ...schema, title: "Basalt appliance definition (appliance.toml)" }, null, 2)}\n`;
}
