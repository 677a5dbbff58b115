// The rollout progress chart, drawn on the server as inline SVG (no chart library, no client code):
// x is the time since the release was first offered on the channel, y the share of the channel's
// devices. The offered percentage is a step line from the rollout's change history, with paused
// spans hatched and the schedule's remaining steps dotted; downloads, boots and failures are
// cumulative counts of each device's first such event. The root element carries the latest values
// as data attributes, which is what the browser test watches.
import type { RolloutChange } from "../../fleet/db/fleet-db.js";
import type { RolloutProgress } from "../../fleet/fleet.js";
import { formatUtc, percentOf } from "./format.js";
import { type Html, html, raw } from "./html.js";

export interface ChartInput {
  title: string;
  /** When the release was first offered on the channel: x = 0. */
  start: number;
  now: number;
  /** Devices following the channel: 100 %. */
  population: number;
  percent: number;
  paused: boolean;
  /** The rollout's history, oldest first. */
  changes: RolloutChange[];
  /** When each device first downloaded the release, booted it, and failed on it (rolled back or unhealthy). */
  downloaded: number[];
  running: number[];
  failed: number[];
  /** The steps a running schedule has still to take. */
  planned: { at: number; percent: number }[];
}

/** The chart's input from a rollout's progress. */
export function chartInput(p: RolloutProgress, now: number): ChartInput {
  const r = p.rollout;
  const times = (kind: string) => p.points.filter((x) => x.kind === kind).map((x) => x.at);
  // A device that was unhealthy and then rolled back is one failure, at the first of the two.
  const firstFailure = new Map<string, number>();
  for (const f of p.points.filter((x) => x.kind === "rollback" || x.kind === "unhealthy"))
    firstFailure.set(f.machine, Math.min(f.at, firstFailure.get(f.machine) ?? Number.POSITIVE_INFINITY));
  const { nextStepAt, stepSeconds } = r;
  const planned: ChartInput["planned"] =
    !r.paused && nextStepAt !== null && r.steps && stepSeconds
      ? r.steps.filter((s) => s > r.percent).map((percent, i) => ({ at: nextStepAt + i * stepSeconds * 1000, percent }))
      : [];
  return {
    title: `${r.image} ${r.version} on ${r.channel}`,
    start: r.addedAt,
    now,
    population: p.population,
    percent: r.percent,
    paused: r.paused,
    changes: [...p.changes].sort((a, b) => a.at - b.at),
    downloaded: times("downloaded").sort((a, b) => a - b),
    running: times("booted").sort((a, b) => a - b),
    failed: [...firstFailure.values()].sort((a, b) => a - b),
    planned,
  };
}

export const SERIES = {
  offered: { label: "offered", color: "#475569" },
  downloaded: { label: "downloaded", color: "#2563eb" },
  running: { label: "running it", color: "#16a34a" },
  failed: { label: "failed (rolled back or unhealthy)", color: "#dc2626" },
} as const;

const W = 880;
const H = 320;
const M = { left: 48, right: 24, top: 22, bottom: 40 };
const TICK_STEPS = [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 1209600, 2592000].map(
  (s) => s * 1000,
);

const r1 = (v: number) => Math.round(v * 10) / 10;

function tickLabel(ms: number): string {
  const s = ms / 1000;
  if (s === 0) return "0";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${s / 60} min`;
  if (s < 86400) return `${s / 3600} h`;
  return `${s / 86400} d`;
}

/** A line that holds each value until the next: the shape of a percentage that changes at instants. */
function stepPath(points: { t: number; v: number }[], end: number, x: (t: number) => number, y: (v: number) => number): string {
  const first = points[0];
  if (!first) return "";
  let d = `M${r1(x(first.t))},${r1(y(first.v))}`;
  for (const p of points.slice(1)) d += `H${r1(x(p.t))}V${r1(y(p.v))}`;
  return `${d}H${r1(x(end))}`;
}

/** Spans during which the rollout was paused, from its history. */
function pausedSpans(changes: RolloutChange[], now: number): { from: number; to: number }[] {
  const out: { from: number; to: number }[] = [];
  let since: number | undefined;
  for (const c of changes) {
    if (c.paused && since === undefined) since = c.at;
    if (!c.paused && since !== undefined) {
      out.push({ from: since, to: c.at });
      since = undefined;
    }
  }
  if (since !== undefined) out.push({ from: since, to: now });
  return out;
}

export function renderRolloutChart(c: ChartInput): Html {
  const last = (xs: number[]) => xs[xs.length - 1] ?? c.start;
  const end = Math.max(c.now, last(c.changes.map((x) => x.at)), last(c.downloaded), last(c.running), last(c.failed), last(c.planned.map((p) => p.at)));
  const span = Math.max(end - c.start, 60_000);
  const share = (n: number) => (c.population > 0 ? (n / c.population) * 100 : 0);
  // Devices can leave the channel after taking the release; let the axis grow rather than clip them.
  const top = Math.max(100, Math.ceil(Math.max(share(c.downloaded.length), share(c.running.length), share(c.failed.length)) / 25) * 25);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const x = (t: number) => M.left + (Math.max(0, t - c.start) / span) * plotW;
  const y = (v: number) => M.top + (1 - Math.min(v, top) / top) * plotH;
  const tickStep = TICK_STEPS.find((s) => span / s <= 8) ?? (TICK_STEPS[TICK_STEPS.length - 1] as number);

  const parts: string[] = [];
  for (let v = 0; v <= top; v += 25) {
    parts.push(
      `<line x1="${M.left}" x2="${W - M.right}" y1="${r1(y(v))}" y2="${r1(y(v))}" stroke="#e2e8f0"/>`,
      `<text x="${M.left - 8}" y="${r1(y(v) + 4)}" text-anchor="end" class="tick">${v}%</text>`,
    );
  }
  for (let t = 0; t <= span; t += tickStep) {
    parts.push(
      `<line x1="${r1(x(c.start + t))}" x2="${r1(x(c.start + t))}" y1="${M.top + plotH}" y2="${M.top + plotH + 5}" stroke="#94a3b8"/>`,
      `<text x="${r1(x(c.start + t))}" y="${M.top + plotH + 18}" text-anchor="middle" class="tick">${tickLabel(t)}</text>`,
    );
  }
  parts.push(`<text x="${M.left + plotW / 2}" y="${H - 4}" text-anchor="middle" class="axis">time since the release was offered</text>`);
  for (const s of pausedSpans(c.changes, c.now)) {
    const x1 = x(s.from);
    const w = Math.max(2, x(s.to) - x1);
    parts.push(
      `<rect class="paused-span" x="${r1(x1)}" y="${M.top}" width="${r1(w)}" height="${plotH}" fill="url(#paused-hatch)" stroke="#f59e0b" stroke-opacity="0.5"/>`,
      `<text x="${r1(x1 + 4)}" y="${M.top + 12}" class="tick" fill="#b45309">paused</text>`,
    );
  }
  if (c.planned.length) {
    parts.push(`<line x1="${r1(x(c.now))}" x2="${r1(x(c.now))}" y1="${M.top}" y2="${M.top + plotH}" stroke="#94a3b8" stroke-dasharray="2 3"/>`);
    const planned = [{ t: c.now, v: c.percent }, ...c.planned.map((p) => ({ t: p.at, v: p.percent }))];
    parts.push(
      `<path class="series-planned" d="${stepPath(planned, end, x, y)}" fill="none" stroke="${SERIES.offered.color}" stroke-width="2" stroke-dasharray="1 5" stroke-linecap="round"/>`,
    );
  }
  const offered = c.changes.length ? c.changes.map((ch) => ({ t: ch.at, v: ch.percent })) : [{ t: c.start, v: c.percent }];
  const cumulative = (times: number[]) => [{ t: c.start, v: 0 }, ...times.map((t, i) => ({ t, v: share(i + 1) }))];
  const lines: [keyof typeof SERIES, { t: number; v: number }[], string][] = [
    ["offered", offered, `stroke-width="2.5" stroke-dasharray="6 3"`],
    ["downloaded", cumulative(c.downloaded), `stroke-width="2"`],
    ["running", cumulative(c.running), `stroke-width="2.5"`],
    ["failed", cumulative(c.failed), `stroke-width="2"`],
  ];
  for (const [name, points, style] of lines) {
    parts.push(`<path class="series-${name}" d="${stepPath(points, c.now, x, y)}" fill="none" stroke="${SERIES[name].color}" ${style}/>`);
  }
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#cbd5e1"/>`);

  const values = {
    offered: Math.round(c.percent),
    downloaded: percentOf(c.downloaded.length, c.population),
    running: percentOf(c.running.length, c.population),
    failed: percentOf(c.failed.length, c.population),
  };
  const summary = `${c.title}: offered to ${values.offered}%${c.paused ? " (paused)" : ""}, downloaded by ${values.downloaded}%, running on ${values.running}%, failed on ${values.failed}% of ${c.population} devices`;
  return html`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${summary}" data-offered="${values.offered}" data-paused="${c.paused ? "true" : "false"}" data-downloaded="${values.downloaded}" data-running="${values.running}" data-failed="${values.failed}" data-population="${c.population}" data-rendered="${formatUtc(c.now)}" xmlns="http://www.w3.org/2000/svg">
<title>${summary}</title>
<defs><pattern id="paused-hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="8" fill="#f59e0b" fill-opacity="0.25"/></pattern></defs>
${raw(parts.join("\n"))}
</svg>`;
}

/** The chart with its legend and current numbers: the fragment the page refreshes. */
export function renderChartFragment(c: ChartInput): Html {
  const item = (name: keyof typeof SERIES, count: number | null, pct: number) =>
    html`<li><svg width="22" height="10" aria-hidden="true"><line x1="0" x2="22" y1="5" y2="5" stroke="${SERIES[name].color}" stroke-width="3"${raw(name === "offered" ? ` stroke-dasharray="6 3"` : "")}/></svg>
      ${SERIES[name].label} <strong>${pct}%</strong>${count !== null && html` <span class="muted">(${count} ${count === 1 ? "device" : "devices"})</span>`}</li>`;
  return html`${renderRolloutChart(c)}
<ul class="legend">
  ${item("offered", null, Math.round(c.percent))}
  ${item("downloaded", c.downloaded.length, percentOf(c.downloaded.length, c.population))}
  ${item("running", c.running.length, percentOf(c.running.length, c.population))}
  ${item("failed", c.failed.length, percentOf(c.failed.length, c.population))}
  <li class="muted">of ${c.population} ${c.population === 1 ? "device" : "devices"} on the channel · ${c.paused ? "paused spans hatched" : "updated every 2 s"}</li>
</ul>`;
}
