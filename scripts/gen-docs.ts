// npm run docs: writes the documents derived from the key declarations: the JSON Schema of
// appliance.toml (docs/appliance.schema.json) and the key reference (docs/appliance-reference.md).
// The golden test fails when they are out of date.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderReference } from "../src/definition/reference.js";
import { renderJsonSchema } from "../src/definition/schema.js";

const docs = join(import.meta.dirname, "../docs");
writeFileSync(join(docs, "appliance.schema.json"), renderJsonSchema());
writeFileSync(join(docs, "appliance-reference.md"), renderReference());
console.log(`wrote ${join(docs, "appliance.schema.json")} and ${join(docs, "appliance-reference.md")}`);
