// The Markdown reference of every appliance.toml key, generated from the same schema that validates.
import { z } from "zod";
import { features } from "../features/registry.js";

interface JsonSchemaNode {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  pattern?: string;
  items?: JsonSchemaNode;
  properties?: Record<string, JsonSchemaNode>;
  anyOf?: JsonSchemaNode[];
  additionalProperties?: JsonSchemaNode | boolean;
  required?: string[];
}

function typeOf(n: JsonSchemaNode): string {
  if (n.enum) return n.enum.map((v) => JSON.stringify(v)).join(" \\| ");
  if (n.anyOf) return n.anyOf.map(typeOf).join(" \\| ");
  if (n.type === "array") return `array of ${n.items ? typeOf(n.items) : "any"}`;
  if (n.type === "object") return "table";
  return Array.isArray(n.type) ? n.type.join(" \\| ") : (n.type ?? "any");
}

function rows(shape: z.ZodRawShape, prefix: string): string[] {
  const node = z.toJSONSchema(z.object(shape), { io: "input", unrepresentable: "any" }) as JsonSchemaNode;
  const out: string[] = [];
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const name = `${prefix}${key}`;
    if (child.type === "object" && child.properties) {
      for (const [sub, grand] of Object.entries(child.properties)) out.push(row(`${name}.${sub}`, grand, child.required?.includes(sub) ?? false));
    } else {
      out.push(row(name, child, node.required?.includes(key) ?? false));
    }
  }
  return out;
}

function row(name: string, n: JsonSchemaNode, required: boolean): string {
  const def = n.default !== undefined ? `\`${JSON.stringify(n.default)}\`` : required ? "required" : "optional";
  return `| \`${name}\` | ${typeOf(n)} | ${def} | ${(n.description ?? "").replace(/\|/g, "\\|")} |`;
}

export function renderReference(): string {
  const parts = [
    "# appliance.toml reference",
    "",
    "Generated from Basalt's schema (`basalt schema --reference`); do not edit by hand.",
    "Dotted names are TOML tables: `user.name` is `name` under `[user]`. Relative paths resolve from the definition's directory.",
    "",
  ];
  for (const f of features) {
    const lines = [...rows(f.keys, ""), ...rows(f.toggles, "features.")];
    if (!lines.length) continue;
    parts.push(`## ${f.name}`, "", f.summary, "", "| key | type | default | meaning |", "| --- | --- | --- | --- |", ...lines, "");
  }
  return `${parts.join("\n")}`;
}
