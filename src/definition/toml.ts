// Reads a TOML file keeping the line of every key, so that problems can be reported as file:line.
import { readFileSync } from "node:fs";
import { type AST, getStaticTOMLValue, ParseError, parseTOML } from "toml-eslint-parser";
import { DefinitionError } from "../errors.js";

export interface LocatedToml {
  file: string;
  value: Record<string, unknown>;
  /** Line of the key at a dotted path (array indexes as numbers), or of its nearest located parent. */
  lineOf(path: readonly (string | number)[]): number | undefined;
}

function keyName(k: AST.TOMLBare | AST.TOMLQuoted): string {
  return k.type === "TOMLBare" ? k.name : k.value;
}

export function parseLocatedToml(text: string, file: string): LocatedToml {
  let ast: AST.TOMLProgram;
  try {
    ast = parseTOML(text);
  } catch (e) {
    if (e instanceof ParseError) {
      throw new DefinitionError([{ file, line: e.lineNumber, key: "", message: `invalid TOML: ${e.message}` }]);
    }
    throw e;
  }
  const lines = new Map<string, number>();
  const record = (path: (string | number)[], line: number) => {
    const id = path.join(".");
    if (!lines.has(id)) lines.set(id, line);
  };
  const visitValue = (node: AST.TOMLContentNode, path: (string | number)[]) => {
    if (node.type === "TOMLInlineTable") {
      for (const kv of node.body) visitKeyValue(kv, path);
    } else if (node.type === "TOMLArray") {
      node.elements.forEach((el, i) => {
        record([...path, i], el.loc.start.line);
        visitValue(el, [...path, i]);
      });
    }
  };
  const visitKeyValue = (kv: AST.TOMLKeyValue, base: (string | number)[]) => {
    const keys = kv.key.keys.map(keyName);
    for (let i = 1; i <= keys.length; i++) record([...base, ...keys.slice(0, i)], kv.loc.start.line);
    visitValue(kv.value, [...base, ...keys]);
  };
  const top = ast.body[0];
  for (const item of top.body) {
    if (item.type === "TOMLKeyValue") {
      visitKeyValue(item, []);
    } else {
      const base = item.resolvedKey;
      for (let i = 1; i <= base.length; i++) record(base.slice(0, i), item.loc.start.line);
      for (const kv of item.body) visitKeyValue(kv, base);
    }
  }
  const value = getStaticTOMLValue(ast) as Record<string, unknown>;
  return {
    file,
    value,
    lineOf(path) {
      for (let n = path.length; n > 0; n--) {
        const line = lines.get(path.slice(0, n).join("."));
        if (line !== undefined) return line;
      }
      return undefined;
    },
  };
}

export function loadLocatedToml(file: string): LocatedToml {
  return parseLocatedToml(readFileSync(file, "utf8"), file);
}
