// The dashboard's page bodies, rendered from data the routes read (no database access here, so
// every page can be rendered and checked from plain values). Every form that changes something
// posts back to the server with the session's CSRF token and returns here with a flash message.

import { compareVersions } from "../../contract/version.js";
import type { AuditEntry, DeviceFilter, Pin, PublishedRelease, ReleaseStats, Rollout, RolloutChange, StoredEvent } from "../../fleet/db/fleet-db.js";
import type { Device } from "../../fleet/inventory.js";
import { type ChartInput, renderChartFragment } from "./chart.js";
import { badge, deviceHref, healthBadge, recoveryNote, renderDetail, rolloutHref, rolloutState, shareBar } from "./components.js";
import { formatBytes, formatDuration, formatUtc, percentOf, timeAgo } from "./format.js";
import { type Html, html, path, queryString, raw } from "./html.js";
import { csrfField, type PageContext, renderLayout } from "./layout.js";

// Overview ----------------------------------------------------------------------------------

export interface ImageSummary {
  image: string;
  versions: { version: string | null; devices: number; unhealthy: number; duplicate: number }[];
  rolledBack: number;
}

export interface ChannelSummary {
  image: string;
  channel: string;
  rollouts: { rollout: Rollout; stats: ReleaseStats }[];
}

const byVersionDesc = (a: string | null, b: string | null) => (a === null ? 1 : b === null ? -1 : compareVersions(b, a));

function imageCard(s: ImageSummary): Html {
  const total = s.versions.reduce((n, v) => n + v.devices, 0);
  const unhealthy = s.versions.reduce((n, v) => n + v.unhealthy, 0);
  const duplicate = s.versions.reduce((n, v) => n + v.duplicate, 0);
  const devices = (q: Record<string, string>) => `/ui/devices${queryString({ image: s.image, ...q })}`;
  const versions = [...s.versions].sort((a, b) => byVersionDesc(a.version, b.version));
  return html`<section class="card image-summary" data-image="${s.image}">
  <h2>${s.image}</h2>
  <dl class="stats">
    <div><dt>devices</dt><dd><a href="${devices({})}">${total}</a></dd></div>
    <div><dt>unhealthy</dt><dd><a href="${devices({ health: "unhealthy" })}" class="${unhealthy ? "bad" : ""}">${unhealthy}</a></dd></div>
    <div><dt>duplicate machine-ids</dt><dd><a href="${devices({ duplicate: "1" })}">${duplicate}</a></dd></div>
    <div><dt>rolled back</dt><dd><a href="${devices({ rolled_back: "1" })}">${s.rolledBack}</a></dd></div>
  </dl>
  <table>
    <thead><tr><th>booted version</th><th class="num">devices</th><th>share</th><th class="num">unhealthy</th></tr></thead>
    <tbody>${versions.map(
      (v) => html`<tr>
      <td>${v.version === null ? html`<span class="muted">unknown</span>` : html`<a href="${devices({ version: v.version })}">${v.version}</a>`}</td>
      <td class="num">${v.devices}</td><td>${shareBar(percentOf(v.devices, total), "#64748b")}</td>
      <td class="num">${v.unhealthy ? badge("bad", v.unhealthy) : 0}</td></tr>`,
    )}</tbody>
  </table>
</section>`;
}

function channelCard(ctx: PageContext, c: ChannelSummary): Html {
  const rollouts = [...c.rollouts].sort((a, b) => compareVersions(b.rollout.version, a.rollout.version));
  return html`<section class="card channel" data-channel="${c.channel}" data-image="${c.image}">
  <h2>${c.image} <span class="muted">·</span> ${c.channel}</h2>
  <table>
    <thead><tr><th>version</th><th>offered to</th><th>state</th><th class="num">adopters</th><th class="num">running</th><th class="num">failures</th></tr></thead>
    <tbody>${rollouts.map(
      ({ rollout: r, stats }) => html`<tr class="rollout" data-version="${r.version}">
      <td><a href="${rolloutHref(r)}"><strong>${r.version}</strong></a></td>
      <td>${shareBar(r.percent, r.paused ? "#f59e0b" : "#1d4ed8")}</td>
      <td>${rolloutState(r, ctx.now)}</td>
      <td class="num">${stats.adopters}</td><td class="num">${stats.running}</td>
      <td class="num">${stats.failures ? badge("bad", stats.failures) : 0}</td></tr>`,
    )}</tbody>
  </table>
</section>`;
}

export function renderOverview(ctx: PageContext, d: { images: ImageSummary[]; channels: ChannelSummary[] }): Html {
  return renderLayout(
    ctx,
    "overview",
    "Overview",
    html`<h1>Overview</h1>
${recoveryNote}
<h2>Devices by image</h2>
${d.images.length ? html`<div class="grid">${d.images.map(imageCard)}</div>` : html`<p class="card muted">No device has checked in yet.</p>`}
<h2>Channels and rollouts</h2>
${d.channels.length ? d.channels.map((c) => channelCard(ctx, c)) : html`<p class="card muted">Nothing is offered yet: publish a release (<a href="/ui/releases">Releases</a>).</p>`}`,
  );
}

// Rollout -----------------------------------------------------------------------------------

export interface RolloutPageData {
  rollout: Rollout;
  stats: ReleaseStats;
  changes: RolloutChange[];
  chart: ChartInput;
}

/** The fragment the rollout page re-fetches: state, numbers and chart. */
export function progressHref(r: Pick<Rollout, "image" | "channel" | "version">): string {
  return `${rolloutHref(r)}/chart`;
}

/** The rollout's state, numbers and chart: the part of the page that refreshes itself. */
export function renderRolloutProgress(d: Omit<RolloutPageData, "changes">): Html {
  const r = d.rollout;
  return html`<div class="state">${rolloutState(r, d.chart.now)}</div>
  <dl class="stats">
    <div><dt>offered to</dt><dd>${r.percent}%</dd></div>
    <div><dt>adopters</dt><dd>${d.stats.adopters}</dd></div>
    <div><dt>running now</dt><dd>${d.stats.running}</dd></div>
    <div><dt>rolled back</dt><dd>${d.stats.rolledBack}</dd></div>
    <div><dt>unhealthy</dt><dd>${d.stats.unhealthy}</dd></div>
    <div><dt>pause above</dt><dd>${Math.round(r.maxFailureRate * 100)}% <small class="muted">failures once ${r.minDevices} took it</small></dd></div>
    ${r.steps && html`<div><dt>schedule</dt><dd>${r.steps.join(" → ")}% <small class="muted">every ${formatDuration((r.stepSeconds ?? 0) * 1000)}</small></dd></div>`}
  </dl>
  ${renderChartFragment(d.chart)}`;
}

export function renderRolloutPage(ctx: PageContext, d: RolloutPageData): Html {
  const r = d.rollout;
  const action = rolloutHref(r);
  const form = (cls: string, body: Html) => html`<form method="post" action="${action}" class="${cls}">${csrfField(ctx)}${body}</form>`;
  const changes = [...d.changes].sort((a, b) => b.at - a.at);
  return renderLayout(
    ctx,
    "overview",
    `${r.image} ${r.version} on ${r.channel}`,
    html`<h1>${r.image} ${r.version} <small>on ${r.channel} · offered ${timeAgo(r.addedAt, ctx.now)}</small></h1>
<section class="card">
  <div id="progress" data-refresh="${progressHref(r)}">${renderRolloutProgress(d)}</div>
</section>
<section class="card">
  <h2>Change the rollout</h2>
  <div class="actions">
    <div class="action"><h3>Share of the channel</h3>
      ${form("set-percent", html`<label>Offer to (%) <input type="number" name="percent" min="0" max="100" step="1" value="${r.percent}" required></label><button type="submit">Set</button>`)}
      <div class="quick">${[10, 25, 50, 100].map((p) => form(`quick quick-${p}`, html`<input type="hidden" name="percent" value="${p}"><button type="submit" class="secondary">${p}%</button>`))}</div>
    </div>
    <div class="action"><h3>${r.paused ? "Resume" : "Pause"}</h3>
    ${
      r.paused
        ? form(
            "resume",
            html`<p class="muted">Devices are offered nothing new while paused.</p><button type="submit" name="paused" value="false">Resume</button>`,
          )
        : form(
            "pause",
            html`<input type="hidden" name="paused" value="true"><label>Reason <input type="text" name="reason" maxlength="200" placeholder="why (optional)"></label><button type="submit" class="danger">Pause</button>`,
          )
    }</div>
    <div class="action"><h3>Schedule</h3>
    ${form(
      "schedule",
      html`<label>Steps (%) <input type="text" name="steps" placeholder="10,50,100" value="${r.steps?.join(",") ?? ""}" required size="10"></label>
      <label>Seconds between <input type="number" name="stepSeconds" min="1" step="1" value="${r.stepSeconds ?? 3600}" required></label><button type="submit" class="secondary">Set schedule</button>`,
    )}</div>
    <div class="action"><h3>Failure policy</h3>
    ${form(
      "policy",
      html`<label>Pause above (%) <input type="number" name="maxFailurePercent" min="0" max="100" step="1" value="${Math.round(r.maxFailureRate * 100)}" required></label>
      <label>once devices took it <input type="number" name="minDevices" min="1" step="1" value="${r.minDevices}" required></label><button type="submit" class="secondary">Set policy</button>`,
    )}</div>
  </div>
</section>
${recoveryNote}
<section class="card">
  <h2>Changes</h2>
  <table class="changes">
    <thead><tr><th>when</th><th>who</th><th class="num">percent</th><th>paused</th><th>reason</th></tr></thead>
    <tbody>${changes.map(
      (c) => html`<tr><td>${timeAgo(c.at, ctx.now)}</td><td>${c.actor}</td><td class="num">${c.percent}%</td>
      <td>${c.paused ? badge("warn", "paused") : html`<span class="muted">no</span>`}</td><td>${c.reason ?? ""}</td></tr>`,
    )}</tbody>
  </table>
</section>`,
  );
}

// Devices -----------------------------------------------------------------------------------

export interface DevicesPageData {
  query: Record<string, string | undefined>;
  filter: DeviceFilter;
  total: number;
  devices: Device[];
  /** Known values, offered as suggestions in the filter form. */
  images: string[];
  channels: string[];
}

export const PAGE_SIZE = 50;

function textFilter(name: string, label: string, value: string | undefined, list?: string): Html {
  return html`<label>${label} <input type="text" name="${name}" value="${value ?? ""}"${raw(list ? ` list="${list}"` : "")}></label>`;
}

export function renderDevicesPage(ctx: PageContext, d: DevicesPageData): Html {
  const q = d.query;
  const offset = d.filter.offset ?? 0;
  const limit = d.filter.limit ?? PAGE_SIZE;
  const keep = {
    image: q.image,
    version: q.version,
    channel: q.channel,
    group: q.group,
    health: q.health,
    duplicate: q.duplicate,
    rolled_back: q.rolled_back,
    q: q.q,
  };
  const page = (o: number) => `/ui/devices${queryString({ ...keep, ...(limit !== PAGE_SIZE ? { limit } : {}), offset: o || undefined })}`;
  const health = (v: string, label: string) => html`<option value="${v}"${raw(q.health === v ? " selected" : "")}>${label}</option>`;
  const checked = (v: string | undefined) => raw(v === "1" || v === "true" ? " checked" : "");
  const rows = d.devices.map(
    (x) => html`<tr class="device" data-machine="${x.machine}">
    <td><input type="checkbox" name="device" value="${x.image}/${x.machine}" aria-label="select ${x.machine}"></td>
    <td class="mono"><a href="${deviceHref(x)}">${x.machine}</a></td>
    <td>${x.image}</td><td>${x.channel}</td><td>${x.group ?? html`<span class="muted">–</span>`}</td>
    <td>${x.bootedVersion ?? html`<span class="muted">?</span>`}</td>
    <td>${healthBadge(x)}</td>
    <td>${x.report ? x.report.blessed : html`<span class="muted">–</span>`}</td>
    <td>${timeAgo(x.lastSeen, ctx.now)}</td>
    <td class="num">${x.reboots}</td>
    <td>${x.rolledBack.length ? badge("warn", x.rolledBack.join(", ")) : ""}</td>
    <td>${x.duplicate ? badge("bad", "duplicate") : ""}</td></tr>`,
  );
  return renderLayout(
    ctx,
    "devices",
    "Devices",
    html`<h1>Devices <small class="device-count">${d.total} ${d.total === 1 ? "device" : "devices"}</small></h1>
<section class="card">
  <form method="get" action="/ui/devices" class="filters">
    ${textFilter("image", "Image", q.image, "images")}
    ${textFilter("version", "Booted version", q.version)}
    ${textFilter("channel", "Channel", q.channel, "channels")}
    ${textFilter("group", "Group", q.group)}
    <label>Health <select name="health">${health("", "any")}${health("healthy", "healthy")}${health("unhealthy", "unhealthy")}${health("unknown", "unknown")}</select></label>
    <label class="check"><input type="checkbox" name="duplicate" value="1"${checked(q.duplicate)}> duplicates only</label>
    <label class="check"><input type="checkbox" name="rolled_back" value="1"${checked(q.rolled_back)}> rolled back only</label>
    ${textFilter("q", "Machine-id contains", q.q)}
    <button type="submit">Filter</button> <a href="/ui/devices">clear</a>
  </form>
  <datalist id="images">${d.images.map((i) => html`<option value="${i}">`)}</datalist>
  <datalist id="channels">${d.channels.map((c) => html`<option value="${c}">`)}</datalist>
</section>
<form method="post" action="/ui/devices/group" class="card">
  ${csrfField(ctx)}<input type="hidden" name="query" value="${queryString({ ...keep, offset: offset || undefined })}">
  <table class="devices">
    <thead><tr><th></th><th>machine-id</th><th>image</th><th>channel</th><th>group</th><th>booted</th><th>health</th><th>blessed</th><th>last seen</th><th class="num">reboots</th><th>rolled back from</th><th></th></tr></thead>
    <tbody>${rows.length ? rows : html`<tr><td colspan="12" class="muted">No device matches.</td></tr>`}</tbody>
  </table>
  <div class="pager">
    ${offset > 0 ? html`<a href="${page(Math.max(0, offset - limit))}">← previous</a>` : ""}
    <span class="muted">${d.total ? `${offset + 1}–${Math.min(offset + d.devices.length, d.total)} of ${d.total}` : ""}</span>
    ${offset + d.devices.length < d.total ? html`<a href="${page(offset + limit)}">next →</a>` : ""}
    <span class="filters"><label>Group of the selected devices <input type="text" name="group" placeholder="empty clears"></label><button type="submit" class="secondary">Set group</button></span>
  </div>
</form>`,
  );
}

export interface DevicePageData {
  device: Device;
  events: StoredEvent[];
  /** The pins that apply to the device: its own, and its group's. */
  pins: Pin[];
  versions: string[];
}

export function renderDevicePage(ctx: PageContext, d: DevicePageData): Html {
  const x = d.device;
  const r = x.report;
  const base = deviceHref(x);
  const own = d.pins.find((p) => p.scope === "device");
  const group = d.pins.find((p) => p.scope === "group");
  return renderLayout(
    ctx,
    "devices",
    x.machine,
    html`<h1><span class="mono">${x.machine}</span> <small>${x.image} · ${x.channel}</small></h1>
<div class="grid">
<section class="card">
  <h2>Device</h2>
  <dl class="facts">
    <dt>booted version</dt><dd>${x.bootedVersion ?? "?"}</dd>
    <dt>health</dt><dd>${healthBadge(x)} ${x.duplicate ? badge("bad", "duplicate machine-id") : ""}</dd>
    <dt>group</dt><dd>${x.group ?? html`<span class="muted">none</span>`}</dd>
    <dt>downloaded</dt><dd>${x.downloadedVersion ?? html`<span class="muted">nothing</span>`} ${x.downloadedAt !== null && html`<span class="muted">${timeAgo(x.downloadedAt, ctx.now)}</span>`}</dd>
    <dt>rolled back from</dt><dd>${x.rolledBack.length ? x.rolledBack.join(", ") : html`<span class="muted">–</span>`}</dd>
    <dt>reboots</dt><dd>${x.reboots}</dd>
    <dt>boot id</dt><dd class="mono">${x.bootId ?? "?"}</dd>
    <dt>arch</dt><dd>${x.arch}</dd>
    <dt>first seen</dt><dd>${timeAgo(x.firstSeen, ctx.now)}</dd>
    <dt>last seen</dt><dd>${timeAgo(x.lastSeen, ctx.now)}</dd>
    <dt>pinned</dt><dd>${own ? html`to ${own.version} <span class="muted">by ${own.actor}</span>` : group ? html`to ${group.version} <span class="muted">(group ${group.target})</span>` : html`<span class="muted">no</span>`}</dd>
  </dl>
</section>
<section class="card last-report">
  <h2>Last report ${x.reportAt !== null && html`<small class="muted">${timeAgo(x.reportAt, ctx.now)}</small>`}</h2>
  ${
    r
      ? html`<dl class="facts">
    <dt>event</dt><dd>${r.event}</dd>
    <dt>version</dt><dd>${r.version}</dd>
    <dt>healthy</dt><dd>${r.healthy ? badge("ok", "yes") : badge("bad", "no")}</dd>
    <dt>blessed</dt><dd>${r.blessed}</dd>
    ${r.reason !== undefined && html`<dt>reason</dt><dd class="reason">${r.reason}</dd>`}
    <dt>failed units</dt><dd>${r.failed_units.length ? r.failed_units.map((u) => html`<div class="mono">${u}</div>`) : html`<span class="muted">none</span>`}</dd>
    <dt>uptime</dt><dd>${formatDuration(r.uptime_seconds * 1000)}</dd>
    <dt>free in /var</dt><dd>${r.var_free_bytes !== undefined ? formatBytes(r.var_free_bytes) : html`<span class="muted">?</span>`}</dd>
    ${r.update_result !== undefined && html`<dt>update result</dt><dd>${r.update_result}</dd>`}
    <dt>boot entries</dt><dd>${r.entries.map((e) => html`<div class="mono">${e}</div>`)}</dd>
  </dl>`
      : html`<p class="muted">This device has not reported yet (it needs its report token).</p>`
  }
</section>
<section class="card">
  <h2>Pin and group</h2>
  <div class="actions">
    <form method="post" action="${base}/pin">${csrfField(ctx)}
      <label>Pin to version <select name="version">${[...d.versions]
        .sort((a, b) => compareVersions(b, a))
        .map((v) => html`<option value="${v}"${raw(own?.version === v ? " selected" : "")}>${v}</option>`)}</select></label>
      <button type="submit" class="secondary">Pin</button></form>
    ${own && html`<form method="post" action="${base}/unpin">${csrfField(ctx)}<button type="submit" class="danger">Unpin (follow ${x.channel} again)</button></form>`}
    <form method="post" action="${base}/group">${csrfField(ctx)}
      <label>Group <input type="text" name="group" value="${x.group ?? ""}" placeholder="empty clears"></label>
      <button type="submit" class="secondary">Set group</button></form>
  </div>
  <p class="muted">A pin holds the device on a version whatever the channel offers; the device still never installs a version older than the newest it has.</p>
</section>
</div>
<section class="card">
  <h2>Recent events</h2>
  <table class="events">
    <thead><tr><th>when</th><th>event</th><th>version</th><th>detail</th></tr></thead>
    <tbody>${d.events.map(
      (e) => html`<tr><td>${timeAgo(e.at, ctx.now)}</td><td>${e.kind}</td><td>${e.version ?? ""}</td>
      <td>${e.kind === "report" ? renderDetail(e.detail, ["version", "boot_id", "entries", "uptime_seconds", "var_free_bytes", "failed_units"]) : renderDetail(e.detail)}</td></tr>`,
    )}</tbody>
  </table>
</section>`,
  );
}

// Releases ----------------------------------------------------------------------------------

export interface ReleasesPageData {
  releases: PublishedRelease[];
  /** Where each release is offered: `image version` → channels. */
  offeredOn: Map<string, string[]>;
  channels: string[];
  pins: Pin[];
}

/** Which key signed a release's indexes (what devices must trust to take it), or why it cannot be offered. */
function signedBy(m: PublishedRelease): Html {
  if (!m.signedBy) return html`${badge("bad", "no signed indexes")} <span class="muted">publish it again to offer it</span>`;
  return html`${m.devSigned ? badge("warn", "development keys") : badge("ok", "release keys")} <span class="mono" title="${m.signedBy}">${m.signedBy.slice(-16)}</span>`;
}

export function renderReleasesPage(ctx: PageContext, d: ReleasesPageData): Html {
  const releases = [...d.releases].sort((a, b) => a.id.localeCompare(b.id) || compareVersions(b.version, a.version));
  const images = [...new Set(releases.map((r) => r.id))];
  return renderLayout(
    ctx,
    "releases",
    "Releases",
    html`<h1>Releases</h1>
<datalist id="channels">${d.channels.map((c) => html`<option value="${c}">`)}</datalist>
<section class="card">
  <table class="releases">
    <thead><tr><th>image</th><th>version</th><th class="num">files</th><th class="num">size</th><th>committed</th><th>signed</th><th>offered on</th><th>publish on a channel</th></tr></thead>
    <tbody>${releases.map((m) => {
      const on = d.offeredOn.get(`${m.id} ${m.version}`) ?? [];
      return html`<tr class="release" data-version="${m.version}">
      <td>${m.id}</td><td><strong>${m.version}</strong></td><td class="num">${m.files.length}</td>
      <td class="num">${formatBytes(m.files.reduce((n, f) => n + f.size, 0))}</td>
      <td>${timeAgo(m.committedAt, ctx.now)}</td>
      <td>${signedBy(m)}</td>
      <td>${on.length ? on.map((c) => html`<a href="${rolloutHref({ image: m.id, channel: c, version: m.version })}">${c}</a> `) : html`<span class="muted">–</span>`}</td>
      <td><form method="post" action="${path("ui", "releases", m.id, m.version, "promote")}" class="filters">${csrfField(ctx)}
        <label>Channel <input type="text" name="channel" value="stable" list="channels" required size="8"></label>
        <label>Percent <input type="number" name="percent" min="0" max="100" step="1" value="10"></label>
        <label>Steps <input type="text" name="steps" placeholder="10,50,100" size="9"></label>
        <label>Seconds between <input type="number" name="stepSeconds" min="1" step="1" placeholder="3600"></label>
        <button type="submit">Offer</button></form></td></tr>`;
    })}</tbody>
  </table>
  ${!releases.length && html`<p class="muted">No release yet: <code>basalt publish DIR --server URL</code> uploads one.</p>`}
</section>
<section class="card">
  <h2>Pins</h2>
  <table class="pins">
    <thead><tr><th>image</th><th>pinned</th><th>version</th><th>by</th><th>since</th><th></th></tr></thead>
    <tbody>${d.pins.map(
      (p) => html`<tr class="pin"><td>${p.image}</td>
      <td>${p.scope === "device" ? html`device <a class="mono" href="${deviceHref({ image: p.image, machine: p.target })}">${p.target}</a>` : html`group <strong>${p.target}</strong>`}</td>
      <td>${p.version}</td><td>${p.actor}</td><td>${timeAgo(p.at, ctx.now)}</td>
      <td><form method="post" action="/ui/pins/unpin" class="inline">${csrfField(ctx)}<input type="hidden" name="image" value="${p.image}"><input type="hidden" name="scope" value="${p.scope}"><input type="hidden" name="target" value="${p.target}"><button type="submit" class="danger">Unpin</button></form></td></tr>`,
    )}</tbody>
  </table>
  ${!d.pins.length && html`<p class="muted">No pins: every device follows its channel.</p>`}
  ${
    images.length > 0 &&
    html`<form method="post" action="/ui/pins" class="filters">${csrfField(ctx)}
    <label>Image <select name="image">${images.map((i) => html`<option>${i}</option>`)}</select></label>
    <label>Group <input type="text" name="group" required></label>
    <label>Version <input type="text" name="version" required size="8"></label>
    <button type="submit" class="secondary">Pin the group</button></form>`
  }
</section>`,
  );
}

// Audit -------------------------------------------------------------------------------------

export function renderAuditPage(ctx: PageContext, entries: AuditEntry[]): Html {
  return renderLayout(
    ctx,
    "audit",
    "Audit",
    html`<h1>Audit log <small>the last ${entries.length} operator actions</small></h1>
<section class="card">
  <table class="audit">
    <thead><tr><th>when</th><th>who</th><th>action</th><th>detail</th></tr></thead>
    <tbody>${entries.map(
      (e) =>
        html`<tr><td title="${formatUtc(e.at)}">${timeAgo(e.at, ctx.now)}</td><td>${e.actor}</td><td>${e.action}</td><td>${renderDetail(e.detail)}</td></tr>`,
    )}</tbody>
  </table>
</section>`,
  );
}
