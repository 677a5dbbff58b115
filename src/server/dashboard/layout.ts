// The page shell every dashboard page shares: header with navigation and the signed-in operator,
// the flash message of the last action, the stylesheet and the one small script (it re-fetches
// elements marked data-refresh, the live chart). Both are inline and allowed by their hashes in
// the Content-Security-Policy, so no other script or style can run, whatever a page contains.
import { createHash } from "node:crypto";
import { type Fragment, type Html, html, raw } from "./html.js";

const STYLE = `
:root { --fg:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f8fafc; --card:#fff; --accent:#1d4ed8; --ok:#15803d; --warn:#b45309; --bad:#b91c1c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
header { background:#0f172a; color:#e2e8f0; }
header .top { max-width:1240px; margin:0 auto; padding:0 20px; display:flex; align-items:center; gap:24px; height:52px; }
header .brand { font-weight:650; letter-spacing:.02em; color:#fff; }
header nav { display:flex; gap:4px; flex:1; }
header nav a { color:#cbd5e1; padding:6px 10px; border-radius:6px; }
header nav a[aria-current="page"] { background:#1e293b; color:#fff; }
header .who { display:flex; align-items:center; gap:10px; color:#94a3b8; }
header .who button { background:transparent; color:#cbd5e1; border:1px solid #334155; }
main { max-width:1240px; margin:0 auto; padding:20px; }
h1 { font-size:22px; margin:4px 0 16px; font-weight:650; } h2 { font-size:16px; margin:0 0 10px; font-weight:650; }
h1 small { font-weight:400; color:var(--muted); font-size:14px; margin-left:8px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px 18px; margin-bottom:16px; }
.grid { display:grid; gap:16px; grid-template-columns:repeat(auto-fit, minmax(280px, 1fr)); }
.grid { margin-bottom:16px; } .grid > .card { margin-bottom:0; }
h1 .mono { font-size:20px; } dd.mono, td.mono { word-break:break-all; }
.stats a.bad { color:var(--bad); } .stats small { font-size:12px; font-weight:400; }
.filters input[type=text] { width:150px; } .filters label.check { padding-bottom:7px; }
.state { margin-bottom:6px; }
.kv { display:inline-block; margin-right:14px; } td.num { white-space:nowrap; }
table.releases input[type=text] { width:96px; }
table { width:100%; border-collapse:collapse; }
th, td { text-align:left; padding:7px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
tr:last-child td { border-bottom:0; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
code, .mono { font:12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.muted { color:var(--muted); }
.badge { display:inline-block; padding:1px 8px; border-radius:999px; font-size:12px; font-weight:600; background:#e2e8f0; color:#334155; white-space:nowrap; }
.badge.ok { background:#dcfce7; color:var(--ok); } .badge.warn { background:#fef3c7; color:var(--warn); } .badge.bad { background:#fee2e2; color:var(--bad); }
.flash { padding:10px 14px; border-radius:8px; margin-bottom:16px; border:1px solid; }
.flash.ok { background:#f0fdf4; border-color:#bbf7d0; color:#14532d; } .flash.error { background:#fef2f2; border-color:#fecaca; color:#7f1d1d; }
.note { background:#eff6ff; border:1px solid #bfdbfe; color:#1e3a8a; border-radius:8px; padding:10px 14px; margin-bottom:16px; }
.stats { display:flex; flex-wrap:wrap; gap:24px; margin:4px 0 0; }
.stats div { min-width:90px; } .stats dt { color:var(--muted); font-size:12px; } .stats dd { margin:0; font-size:20px; font-weight:650; font-variant-numeric:tabular-nums; }
form.inline { display:inline; }
.actions { display:grid; gap:14px; grid-template-columns:repeat(auto-fit, minmax(250px, 1fr)); }
.action { border:1px solid var(--line); border-radius:8px; padding:12px 14px; display:flex; flex-direction:column; gap:10px; }
.action h3, .card h3 { margin:0; font-size:13px; font-weight:650; }
.action p { margin:0; font-size:13px; }
.actions form { display:flex; flex-wrap:wrap; gap:8px; align-items:flex-end; }
.actions .quick { display:flex; gap:6px; }
.actions .quick form { display:inline; }
label { display:flex; flex-direction:column; gap:3px; font-size:12px; color:var(--muted); }
label.check { flex-direction:row; align-items:center; gap:6px; color:var(--fg); font-size:13px; }
input, select, button { font:inherit; font-size:13px; }
input[type=text], input[type=number], input[type=password], select { padding:6px 8px; border:1px solid #cbd5e1; border-radius:6px; background:#fff; min-width:0; }
input[type=number] { width:90px; }
button { padding:6px 12px; border-radius:6px; border:1px solid #1d4ed8; background:#1d4ed8; color:#fff; cursor:pointer; }
button.secondary { background:#fff; color:var(--fg); border-color:#cbd5e1; }
button.danger { background:#fff; color:var(--bad); border-color:#fca5a5; }
button:hover { filter:brightness(.96); }
.filters { display:flex; flex-wrap:wrap; gap:10px; align-items:flex-end; }
.pager { display:flex; gap:12px; align-items:center; margin-top:12px; }
.pbar { display:inline-block; vertical-align:middle; }
svg.chart { width:100%; height:auto; display:block; }
svg .tick { font-size:11px; fill:#64748b; } svg .axis { font-size:12px; fill:#475569; }
.legend { list-style:none; padding:0; margin:10px 0 0; display:flex; flex-wrap:wrap; gap:6px 22px; }
.legend li { display:flex; align-items:center; gap:6px; }
.login { max-width:360px; margin:80px auto; }
.login form { display:flex; flex-direction:column; gap:12px; }
dl.facts { display:grid; grid-template-columns:max-content 1fr; gap:6px 16px; margin:0; } dl.facts dt { color:var(--muted); } dl.facts dd { margin:0; }
`;

// Swaps in fresh markup for every [data-refresh] element every 2 s while the tab is visible; stops
// when the session is gone (the fragment then answers with a redirect to the sign-in page).
const SCRIPT = `
for (const el of document.querySelectorAll("[data-refresh]")) {
  const src = el.getAttribute("data-refresh");
  const tick = async () => {
    if (!document.hidden) {
      try {
        const r = await fetch(src, { cache: "no-store", redirect: "manual", headers: { accept: "text/html" } });
        if (!r.ok) { el.setAttribute("data-stale", r.type === "opaqueredirect" ? "signed-out" : String(r.status)); if (r.type === "opaqueredirect") return; }
        else { el.innerHTML = await r.text(); el.removeAttribute("data-stale"); }
      } catch { el.setAttribute("data-stale", "offline"); }
    }
    setTimeout(tick, 2000);
  };
  setTimeout(tick, 2000);
}
`;

const hash = (s: string) => `'sha256-${createHash("sha256").update(s).digest("base64")}'`;

/** The policy for every dashboard response: only the stylesheet and script above, forms only to this server. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `script-src ${hash(SCRIPT)}`,
  `style-src ${hash(STYLE)}`,
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join("; ");

export type NavItem = "overview" | "devices" | "releases" | "audit";

export interface Flash {
  kind: "ok" | "error";
  text: string;
}

export interface PageContext {
  operator: string;
  csrf: string;
  flash?: Flash | undefined;
  now: number;
}

const NAV: [NavItem, string, string][] = [
  ["overview", "Overview", "/ui/"],
  ["devices", "Devices", "/ui/devices"],
  ["releases", "Releases", "/ui/releases"],
  ["audit", "Audit", "/ui/audit"],
];

function renderDocument(title: string, body: Fragment): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${title} · Basalt</title>
<style>${raw(STYLE)}</style>
</head>
<body>
${body}
<script>${raw(SCRIPT)}</script>
</body>
</html>`;
}

/** The hidden field every form that changes something carries. */
export function csrfField(ctx: Pick<PageContext, "csrf">): Html {
  return html`<input type="hidden" name="csrf" value="${ctx.csrf}">`;
}

export function renderFlash(flash: Flash | undefined): Html {
  if (!flash) return html``;
  return html`<div class="flash ${flash.kind}" role="${flash.kind === "error" ? "alert" : "status"}">${flash.text}</div>`;
}

export function renderLayout(ctx: PageContext, current: NavItem | null, title: string, body: Fragment): Html {
  return renderDocument(
    title,
    html`<header><div class="top">
  <a class="brand" href="/ui/">Basalt fleet</a>
  <nav>${NAV.map(([id, label, href]) => html`<a href="${href}"${raw(id === current ? ' aria-current="page"' : "")}>${label}</a>`)}</nav>
  <div class="who"><span>Signed in as <strong class="operator">${ctx.operator}</strong></span>
    <form class="inline" method="post" action="/ui/logout">${csrfField(ctx)}<button type="submit">Sign out</button></form>
    <form class="inline" method="post" action="/ui/logout-everywhere">${csrfField(ctx)}<button type="submit" title="End every session of ${ctx.operator}, on every browser">Sign out everywhere</button></form></div>
</div></header>
<main>
${renderFlash(ctx.flash)}
${body}
</main>`,
  );
}

/** The sign-in page: the only one shown without a session. */
export function renderLoginPage(o: { csrf: string; next: string; error?: string; enabled: boolean; name?: string }): Html {
  return renderDocument(
    "Sign in",
    html`<main><div class="card login">
  <h1>Basalt fleet</h1>
  <p class="muted">Sign in with your operator name and password.</p>
  ${o.error && renderFlash({ kind: "error", text: o.error })}
  ${!o.enabled && html`<p class="note">No operator can sign in: start <code>basalt serve</code> with <code>--operators-file</code> or <code>--token-file</code>.</p>`}
  <form method="post" action="/ui/login">
    ${csrfField(o)}
    <input type="hidden" name="next" value="${o.next}">
    <label>Name <input type="text" name="name" autocomplete="username" required autofocus value="${o.name ?? ""}"></label>
    <label>Password <input type="password" name="password" autocomplete="current-password" required></label>
    <button type="submit">Sign in</button>
  </form>
</div></main>`,
  );
}

/** A page for a refused or failed request, inside the layout when someone is signed in. */
export function renderErrorPage(ctx: PageContext | undefined, title: string, message: string): Html {
  const body = html`<h1>${title}</h1><div class="flash error" role="alert">${message}</div><p><a href="/ui/">Back to the overview</a></p>`;
  return ctx ? renderLayout(ctx, null, title, body) : renderDocument(title, html`<main>${body}</main>`);
}
