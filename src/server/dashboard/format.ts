// How the dashboard writes times, sizes and shares. Times are shown relative to the page's render
// ("3 min ago"), with the absolute UTC time in a tooltip, since operators compare them with logs.
import { type Html, html } from "./html.js";

/** `2026-06-01 12:00:05 UTC` */
export function formatUtc(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** A duration in the largest unit that keeps it short: 45 s, 12 min, 3 h, 2 d. */
export function formatDuration(ms: number): string {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.round(s / 360) / 10} h`;
  return `${Math.round(s / 8640) / 10} d`;
}

export function formatRelative(at: number, now: number): string {
  const d = at - now;
  if (Math.abs(d) < 5000) return "just now";
  return d < 0 ? `${formatDuration(d)} ago` : `in ${formatDuration(d)}`;
}

/** A `<time>` element: relative text, the exact time as its tooltip. */
export function timeAgo(at: number | null | undefined, now: number): Html {
  if (at === null || at === undefined) return html`<span class="muted">never</span>`;
  return html`<time datetime="${new Date(at).toISOString()}" title="${formatUtc(at)}">${formatRelative(at, now)}</time>`;
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

/** `part` as a whole percentage of `total` (0 when there is no total). */
export function percentOf(part: number, total: number): number {
  return total > 0 ? Math.round((part / total) * 100) : 0;
}
