// HTML built from tagged templates: every interpolated value is escaped unless it is already Html
// (made by `html` itself or, for text the server wrote, by `raw`). Device reports, group names,
// audit details and query strings all reach pages, so no string goes into markup any other way.

/** Markup that is safe to emit as is. */
export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** Anything a template may interpolate: nothing (renders empty), text, numbers, markup, lists of those. */
export type Fragment = Html | string | number | boolean | null | undefined | readonly Fragment[];

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

function render(f: Fragment): string {
  if (f instanceof Html) return f.value;
  if (Array.isArray(f)) return f.map(render).join("");
  // false and null let a template say `${cond && html`…`}`.
  if (f === null || f === undefined || f === false || f === true) return "";
  return escapeHtml(String(f));
}

export function html(strings: TemplateStringsArray, ...values: Fragment[]): Html {
  let out = strings[0] ?? "";
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? "");
  return new Html(out);
}

/** Markup the server wrote itself (the stylesheet, the script, generated SVG). Never for outside text. */
export function raw(markup: string): Html {
  return new Html(markup);
}

/** A query string from the non-empty values of `params`, with its leading `?` (or nothing). */
export function queryString(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A URL path from segments, each percent-encoded (image ids, channels and versions stay readable). */
export function path(...segments: string[]): string {
  return `/${segments.map(encodeURIComponent).join("/")}`;
}
