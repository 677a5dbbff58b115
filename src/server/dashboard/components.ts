// Small pieces several pages show: state badges, share bars, the rollout state line, the recovery
// note, and compact renderings of event and audit details.
import type { Rollout } from "../../fleet/db/fleet-db.js";
import type { Device } from "../../fleet/inventory.js";
import { formatRelative, formatUtc } from "./format.js";
import { type Fragment, type Html, html, path } from "./html.js";

export function badge(kind: "ok" | "warn" | "bad" | "plain", text: Fragment): Html {
  return html`<span class="badge ${kind === "plain" ? "" : kind}">${text}</span>`;
}

/** A share as a thin bar (an SVG, so the policy needs no inline styles), with its number. */
export function shareBar(percent: number, color = "#1d4ed8"): Html {
  const w = Math.max(0, Math.min(100, percent));
  return html`<svg class="pbar" width="120" height="8" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" aria-label="${Math.round(percent)}%"><rect width="100" height="8" rx="3" fill="#e2e8f0"/><rect width="${w}" height="8" rx="3" fill="${color}"/></svg> <span class="num">${Math.round(percent)}%</span>`;
}

export function rolloutHref(r: Pick<Rollout, "image" | "channel" | "version">): string {
  return path("ui", "rollouts", r.image, r.channel, r.version);
}

export function deviceHref(d: Pick<Device, "image" | "machine">): string {
  return path("ui", "devices", d.image, d.machine);
}

/** Running, paused (and why), done, or waiting for its next scheduled step. */
export function rolloutState(r: Rollout, now: number): Html {
  if (r.paused) return html`${badge("warn", "paused")} <span class="muted">${r.pauseReason ?? ""}</span>`;
  if (r.percent <= 0) return badge("plain", "not offered");
  const next = r.steps?.find((s) => s > r.percent);
  if (r.nextStepAt !== null && next !== undefined) {
    return html`${badge("ok", "running")} <span class="muted" title="${formatUtc(r.nextStepAt)}">next step to ${next}% ${formatRelative(r.nextStepAt, now)}</span>`;
  }
  if (r.percent >= 100) return html`${badge("ok", "running")} <span class="muted">offered to every device</span>`;
  return html`${badge("ok", "running")} <span class="muted">holding at ${r.percent}%</span>`;
}

export function healthBadge(d: Pick<Device, "healthy">): Html {
  if (d.healthy === null) return badge("plain", "unknown");
  return d.healthy ? badge("ok", "healthy") : badge("bad", "unhealthy");
}

export const recoveryNote = html`<div class="note"><strong>Recovering from a bad release:</strong> the stock client never installs an
older version, so lowering a rollout or pinning a device to an older release does not bring back devices that already run it.
Pause the rollout, then publish a newer, fixed release and offer it. Devices that rolled back stay on the previous version until
that newer release reaches them.</div>`;

/** The `key value` pairs of an event's or audit entry's detail, long values cut. */
export function renderDetail(detail: Record<string, unknown> | undefined, skip: readonly string[] = []): Html {
  if (!detail) return html``;
  const entries = Object.entries(detail).filter(([k, v]) => !skip.includes(k) && v !== null && v !== undefined && !(Array.isArray(v) && !v.length));
  return html`${entries.map(([k, v]) => {
    const text = typeof v === "string" ? v : JSON.stringify(v);
    return html`<span class="kv"><span class="muted">${k}</span> ${text.length > 160 ? `${text.slice(0, 160)}…` : text}</span> `;
  })}`;
}
