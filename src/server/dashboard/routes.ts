// The dashboard's routes under /ui/: sign-in, the pages, the live chart fragment and the form
// actions. Every page but sign-in needs a session; every POST also needs the session's CSRF token
// (form field `csrf`), or it is refused with 403 before anything runs. Actions call the same Fleet
// operations as the API, then redirect back (POST/redirect/GET) with a flash message: what was
// done, or the UserError that refused it.
import { createHmac, randomBytes } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { UserError } from "../../errors.js";
import type { Fleet, RolloutOptions, RolloutPatch } from "../../fleet/fleet.js";
import { deviceFilter, rolloutPatch, SESSION_COOKIE } from "../api-routes.js";
import { type Auth, sameSecret } from "../auth.js";
import { chartInput } from "./chart.js";
import { deviceHref, rolloutHref } from "./components.js";
import { type Html, queryString } from "./html.js";
import { CONTENT_SECURITY_POLICY, type Flash, type PageContext, renderErrorPage, renderLoginPage } from "./layout.js";
import {
  type ChannelSummary,
  type ImageSummary,
  PAGE_SIZE,
  renderAuditPage,
  renderDevicePage,
  renderDevicesPage,
  renderOverview,
  renderReleasesPage,
  renderRolloutPage,
  renderRolloutProgress,
} from "./pages.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** A dashboard route anyone may open (the sign-in form). */
    dashboardPublic?: boolean;
  }
}

const FLASH_COOKIE = "basalt_flash";
const LOGIN_COOKIE = "basalt_login";

type Fields = Record<string, string | string[] | undefined>;
type Req<P = Record<string, string>> = FastifyRequest<{ Params: P; Body: Fields; Querystring: Fields }>;
type RolloutParams = { id: string; channel: string; version: string };
type DeviceParams = { id: string; machine: string };

/** One value of a form or query field (a repeated field counts by its first value). */
function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function many(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** A path to go back to after signing in: only pages of this dashboard. */
function safeNext(next: string | undefined): string {
  return next?.startsWith("/ui/") && !next.startsWith("/ui/login") ? next : "/ui/";
}

const b64u = (s: string) => Buffer.from(s).toString("base64url");

export function registerDashboard(app: FastifyInstance, fleet: Fleet, auth: Auth): void {
  // The flash message rides in a short-lived cookie, signed so no other site or subdomain can plant one.
  const flashMac = (body: string) => createHmac("sha256", auth.secret).update(`basalt-flash\0${body}`).digest("base64url");
  const setFlash = (reply: FastifyReply, flash: Flash) => {
    const body = b64u(JSON.stringify(flash));
    reply.setCookie(FLASH_COOKIE, `${body}.${flashMac(body)}`, { path: "/ui", httpOnly: true, sameSite: "strict", maxAge: 60 });
  };
  const takeFlash = (req: FastifyRequest, reply: FastifyReply): Flash | undefined => {
    const value = req.cookies[FLASH_COOKIE];
    if (!value) return undefined;
    reply.clearCookie(FLASH_COOKIE, { path: "/ui" });
    const [body, mac] = value.split(".");
    if (!body || !mac || !sameSecret(mac, flashMac(body))) return undefined;
    try {
      const f = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Flash;
      return (f.kind === "ok" || f.kind === "error") && typeof f.text === "string" ? f : undefined;
    } catch {
      return undefined;
    }
  };

  const session = (req: FastifyRequest) => {
    const cookie = req.cookies[SESSION_COOKIE];
    const operator = auth.session(cookie);
    return operator && cookie ? { operator, cookie } : undefined;
  };
  const context = (req: FastifyRequest, reply: FastifyReply, flash = true): PageContext | undefined => {
    const s = session(req);
    return s ? { operator: s.operator, csrf: auth.csrf(s.cookie), flash: flash ? takeFlash(req, reply) : undefined, now: Date.now() } : undefined;
  };
  const send = (reply: FastifyReply, page: Html, status = 200) => reply.code(status).type("text/html; charset=utf-8").send(page.value);
  const page = (req: FastifyRequest, reply: FastifyReply, render: (ctx: PageContext) => Html) => {
    const ctx = context(req, reply);
    // The preHandler hook let only signed-in requests through; a session that just expired signs in again.
    return ctx ? send(reply, render(ctx)) : reply.redirect("/ui/login", 303);
  };
  const who = (req: FastifyRequest) => req.operator ?? "?";

  /**
   * Runs a form action and redirects to `back` with what it did, or with the UserError that refused it
   * (anything else is a bug and goes to the error handler).
   */
  const act = async (reply: FastifyReply, back: string, run: () => Promise<{ text: string; to?: string }>) => {
    try {
      const done = await run();
      setFlash(reply, { kind: "ok", text: done.text });
      return reply.redirect(done.to ?? back, 303);
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      setFlash(reply, { kind: "error", text: e.hint ? `${e.message} (${e.hint})` : e.message });
      return reply.redirect(back, 303);
    }
  };

  app.get("/", (_req, reply) => reply.redirect("/ui/", 302));

  void app.register(
    async (ui) => {
      ui.addHook("onRequest", async (_req, reply) => {
        reply
          .header("content-security-policy", CONTENT_SECURITY_POLICY)
          .header("x-content-type-options", "nosniff")
          .header("x-frame-options", "DENY")
          .header("referrer-policy", "same-origin")
          .header("cache-control", "no-store");
      });

      // After the body is parsed, so the CSRF token of a form can be checked before the handler runs.
      ui.addHook("preHandler", async (req, reply) => {
        if (req.routeOptions.config.dashboardPublic) return;
        const s = session(req);
        const reading = req.method === "GET" || req.method === "HEAD";
        if (!s) {
          if (reading) return reply.redirect(`/ui/login${queryString({ next: req.url === "/ui" ? undefined : req.url })}`, 303);
          req.log.warn({ url: req.url }, "dashboard: change refused without a session");
          return send(reply, renderErrorPage(undefined, "Not signed in", "Sign in to the dashboard first; nothing was changed."), 403);
        }
        if (!reading) {
          const token = one((req.body as Fields | undefined)?.csrf);
          if (!auth.checkCsrf(s.cookie, token)) {
            req.log.warn({ url: req.url, operator: s.operator }, "dashboard: change refused, bad CSRF token");
            return send(
              reply,
              renderErrorPage(
                undefined,
                "Refused",
                "This form did not carry a valid CSRF token (or your session changed); nothing was changed. Go back, reload and try again.",
              ),
              403,
            );
          }
        }
        req.operator = s.operator;
      });

      ui.setErrorHandler((error, req, reply) => {
        const ctx = context(req, reply, false);
        if (error instanceof UserError) return send(reply, renderErrorPage(ctx, "Refused", error.message), 400);
        const status = (error as { statusCode?: number }).statusCode;
        if (status && status < 500) return send(reply, renderErrorPage(ctx, "Bad request", (error as Error).message), status);
        req.log.error(error);
        return send(reply, renderErrorPage(ctx, "Internal error", "Something went wrong on the server; the server log has the details."), 500);
      });
      ui.setNotFoundHandler((req, reply) => send(reply, renderErrorPage(context(req, reply, false), "Not found", `Nothing at ${req.url}.`), 404));

      // Signing in ---------------------------------------------------------------------------

      // The form carries a nonce that must match a cookie set with it, so another site cannot sign a
      // browser in to an account of its choosing (login CSRF).
      const loginForm = (reply: FastifyReply, o: { next: string; error?: string; name?: string }, status = 200) => {
        const nonce = randomBytes(16).toString("base64url");
        reply.setCookie(LOGIN_COOKIE, nonce, { path: "/ui/login", httpOnly: true, sameSite: "strict", maxAge: 3600 });
        return send(reply, renderLoginPage({ ...o, nonce, enabled: auth.enabled }), status);
      };

      ui.get("/login", { config: { dashboardPublic: true } }, async (req: Req, reply) => {
        const next = safeNext(one(req.query.next));
        if (session(req)) return reply.redirect(next, 303);
        return loginForm(reply, { next });
      });

      ui.post("/login", { config: { dashboardPublic: true } }, async (req: Req, reply) => {
        const b = req.body ?? {};
        const next = safeNext(one(b.next));
        const name = one(b.name) ?? "";
        const nonce = one(b.nonce);
        const expected = req.cookies[LOGIN_COOKIE];
        if (!nonce || !expected || !sameSecret(nonce, expected)) {
          return loginForm(reply, { next, name, error: "The sign-in form had expired; please sign in again." }, 403);
        }
        const operator = await auth.signIn(name, one(b.password) ?? "", req.ip);
        if (!operator) {
          req.log.warn({ name }, "dashboard: sign-in refused");
          return loginForm(reply, { next, name, error: "Wrong name or password." }, 401);
        }
        reply.clearCookie(LOGIN_COOKIE, { path: "/ui/login" });
        reply.setCookie(SESSION_COOKIE, auth.createSession(operator), { path: "/", httpOnly: true, sameSite: "strict", secure: req.protocol === "https" });
        await fleet.db.audit(fleet.now(), operator, "sign-in", { via: "dashboard" });
        req.log.info({ operator }, "dashboard: signed in");
        return reply.redirect(next, 303);
      });

      ui.post("/logout", async (_req, reply) => {
        reply.clearCookie(SESSION_COOKIE, { path: "/" });
        return reply.redirect("/ui/login", 303);
      });

      // Overview -----------------------------------------------------------------------------

      ui.get("/", async (req, reply) => {
        const [counts, channels] = await Promise.all([fleet.db.versionCounts(), fleet.db.channels()]);
        const images: ImageSummary[] = await Promise.all(
          [...new Set(counts.map((c) => c.image))].map(async (image) => ({
            image,
            versions: counts.filter((c) => c.image === image),
            rolledBack: (await fleet.db.devices({ image, rolledBack: true, limit: 1 })).total,
          })),
        );
        const stats = new Map<string, Promise<Awaited<ReturnType<typeof fleet.db.releaseStats>>>>();
        const statsOf = (image: string, version: string) => {
          const key = `${image} ${version}`;
          if (!stats.has(key)) stats.set(key, fleet.db.releaseStats(image, version));
          return stats.get(key) as ReturnType<typeof fleet.db.releaseStats>;
        };
        const summaries: ChannelSummary[] = await Promise.all(
          channels.map(async (c) => ({
            image: c.image,
            channel: c.channel,
            rollouts: await Promise.all(c.rollouts.map(async (rollout) => ({ rollout, stats: await statsOf(c.image, rollout.version) }))),
          })),
        );
        return page(req, reply, (ctx) => renderOverview(ctx, { images, channels: summaries }));
      });

      // Rollouts -----------------------------------------------------------------------------

      /** The rollout's progress and chart, or undefined when the release is not offered on that channel. */
      const rolloutData = async ({ id, channel, version }: RolloutParams) => {
        const rollout = (await fleet.db.channel(id, channel))?.rollouts.find((r) => r.version === version);
        if (!rollout) return undefined;
        const progress = await fleet.progress(id, channel, version);
        return { progress, chart: chartInput(progress, fleet.now()) };
      };
      const notOffered = ({ id, channel, version }: RolloutParams) => `${id} ${version} is not offered on ${channel}.`;

      ui.get("/rollouts/:id/:channel/:version", async (req: Req<RolloutParams>, reply) => {
        const data = await rolloutData(req.params);
        if (!data) return send(reply, renderErrorPage(context(req, reply), "Not found", notOffered(req.params)), 404);
        const { progress, chart } = data;
        return page(req, reply, (ctx) => renderRolloutPage(ctx, { rollout: progress.rollout, stats: progress.stats, changes: progress.changes, chart }));
      });

      ui.get("/rollouts/:id/:channel/:version/chart", async (req: Req<RolloutParams>, reply) => {
        const data = await rolloutData(req.params);
        if (!data) return reply.code(404).type("text/plain; charset=utf-8").send(notOffered(req.params));
        return send(reply, renderRolloutProgress({ rollout: data.progress.rollout, stats: data.progress.stats, chart: data.chart }));
      });

      ui.post("/rollouts/:id/:channel/:version", async (req: Req<RolloutParams>, reply) => {
        const { id, channel, version } = req.params;
        const b = req.body ?? {};
        return act(reply, rolloutHref({ image: id, channel, version }), async () => {
          const fields: Record<string, unknown> = {};
          for (const k of ["percent", "paused", "steps", "stepSeconds", "minDevices"]) {
            const v = one(b[k]);
            if (v !== undefined && v !== "") fields[k] = v;
          }
          // Operators think of the failure threshold in percent; the rollout keeps it as a fraction.
          const rate = one(b.maxFailurePercent);
          if (rate !== undefined && rate !== "") fields.maxFailureRate = Number(rate) / 100;
          const patch = rolloutPatch(fields);
          if (!Object.keys(patch).length) throw new UserError("nothing to change: the form was empty");
          const reason = patch.paused ? one(b.reason)?.trim().slice(0, 200) || null : null;
          const r = await fleet.setRollout(id, channel, version, patch, who(req), reason);
          return { text: `${id} ${version} on ${channel}: ${describePatch(patch)}${r.paused && patch.paused === undefined ? " (still paused)" : ""}.` };
        });
      });

      // Devices ------------------------------------------------------------------------------

      ui.get("/devices", async (req: Req, reply) => {
        const query: Record<string, string | undefined> = {};
        for (const [k, v] of Object.entries(req.query)) query[k] = one(v);
        const filter = deviceFilter({ limit: String(PAGE_SIZE), ...query });
        const [result, counts, channels] = await Promise.all([fleet.db.devices(filter), fleet.db.versionCounts(), fleet.db.channels()]);
        return page(req, reply, (ctx) =>
          renderDevicesPage(ctx, {
            query,
            filter,
            total: result.total,
            devices: result.devices,
            images: [...new Set(counts.map((c) => c.image))],
            channels: [...new Set(channels.map((c) => c.channel))],
          }),
        );
      });

      ui.post("/devices/group", async (req: Req, reply) => {
        const b = req.body ?? {};
        const query = one(b.query);
        return act(reply, `/ui/devices${query?.startsWith("?") ? query : ""}`, async () => {
          const selected = many(b.device);
          if (!selected.length) throw new UserError("select the devices whose group to set first");
          const byImage = new Map<string, string[]>();
          for (const s of selected) {
            const [image, machine] = s.split("/");
            if (!image || !machine) throw new UserError(`not a device: ${s}`);
            byImage.set(image, [...(byImage.get(image) ?? []), machine]);
          }
          const group = one(b.group)?.trim() || null;
          let changed = 0;
          for (const [image, machines] of byImage) changed += await fleet.setGroup(image, machines, group, who(req));
          return {
            text: group
              ? `${changed} ${changed === 1 ? "device" : "devices"} now in group ${group}.`
              : `Group cleared on ${changed} ${changed === 1 ? "device" : "devices"}.`,
          };
        });
      });

      ui.get("/devices/:id/:machine", async (req: Req<DeviceParams>, reply) => {
        const { id, machine } = req.params;
        const device = await fleet.db.device(id, machine);
        if (!device) return send(reply, renderErrorPage(context(req, reply), "Not found", `No device ${machine} of ${id} has checked in.`), 404);
        const [events, pins, releases] = await Promise.all([fleet.db.events({ image: id, machine, limit: 50 }), fleet.db.pins(id), fleet.db.releases(id)]);
        const applying = pins.filter((p) => (p.scope === "device" && p.target === machine) || (p.scope === "group" && p.target === device.group));
        return page(req, reply, (ctx) => renderDevicePage(ctx, { device, events, pins: applying, versions: releases.map((r) => r.version) }));
      });

      ui.post("/devices/:id/:machine/pin", async (req: Req<DeviceParams>, reply) => {
        const { id, machine } = req.params;
        return act(reply, deviceHref({ image: id, machine }), async () => {
          const version = one(req.body?.version);
          if (!version) throw new UserError("choose the version to pin the device to");
          await fleet.pin(id, "device", machine, version, who(req));
          return { text: `Device pinned to ${id} ${version}.` };
        });
      });

      ui.post("/devices/:id/:machine/unpin", async (req: Req<DeviceParams>, reply) => {
        const { id, machine } = req.params;
        return act(reply, deviceHref({ image: id, machine }), async () => {
          if (!(await fleet.unpin(id, "device", machine, who(req)))) throw new UserError("this device was not pinned");
          return { text: "Device unpinned: it follows its channel again." };
        });
      });

      ui.post("/devices/:id/:machine/group", async (req: Req<DeviceParams>, reply) => {
        const { id, machine } = req.params;
        return act(reply, deviceHref({ image: id, machine }), async () => {
          const group = one(req.body?.group)?.trim() || null;
          if (!(await fleet.setGroup(id, [machine], group, who(req)))) throw new UserError(`no device ${machine} of ${id} has checked in`);
          return { text: group ? `Device now in group ${group}.` : "Device removed from its group." };
        });
      });

      // Releases and pins --------------------------------------------------------------------

      ui.get("/releases", async (req, reply) => {
        const [releases, channels, pins] = await Promise.all([fleet.db.releases(), fleet.db.channels(), fleet.db.pins()]);
        const offeredOn = new Map<string, string[]>();
        for (const c of channels)
          for (const r of c.rollouts) offeredOn.set(`${c.image} ${r.version}`, [...(offeredOn.get(`${c.image} ${r.version}`) ?? []), c.channel]);
        return page(req, reply, (ctx) => renderReleasesPage(ctx, { releases, offeredOn, channels: [...new Set(channels.map((c) => c.channel))], pins }));
      });

      ui.post("/releases/:id/:version/promote", async (req: Req<{ id: string; version: string }>, reply) => {
        const { id, version } = req.params;
        const b = req.body ?? {};
        return act(reply, "/ui/releases", async () => {
          const channel = one(b.channel)?.trim() ?? "";
          const fields: Record<string, unknown> = {};
          for (const k of ["percent", "steps", "stepSeconds"]) {
            const v = one(b[k]);
            if (v !== undefined && v !== "") fields[k] = v;
          }
          const options: RolloutOptions = rolloutPatch(fields);
          const c = await fleet.promote(id, channel, version, who(req), options);
          const r = c.rollouts.find((x) => x.version === version);
          return {
            text: `${id} ${version} offered on ${channel} to ${r?.percent ?? options.percent}% of its devices.`,
            to: rolloutHref({ image: id, channel, version }),
          };
        });
      });

      ui.post("/pins", async (req: Req, reply) => {
        const b = req.body ?? {};
        return act(reply, "/ui/releases", async () => {
          const image = one(b.image) ?? "";
          const group = one(b.group)?.trim() ?? "";
          const version = one(b.version)?.trim() ?? "";
          await fleet.pin(image, "group", group, version, who(req));
          return { text: `Group ${group} pinned to ${image} ${version}.` };
        });
      });

      ui.post("/pins/unpin", async (req: Req, reply) => {
        const b = req.body ?? {};
        return act(reply, "/ui/releases", async () => {
          const scope = one(b.scope);
          if (scope !== "device" && scope !== "group") throw new UserError(`pin scope must be device or group, not ${scope}`);
          const target = one(b.target) ?? "";
          if (!(await fleet.unpin(one(b.image) ?? "", scope, target, who(req)))) throw new UserError(`no pin on ${scope} ${target}`);
          return { text: `Unpinned ${scope} ${target}.` };
        });
      });

      // Audit --------------------------------------------------------------------------------

      ui.get("/audit", async (req, reply) => {
        const entries = await fleet.db.auditLog(200);
        return page(req, reply, (ctx) => renderAuditPage(ctx, entries));
      });
    },
    { prefix: "/ui" },
  );
}

/** What a rollout change did, in the words of the flash message. */
function describePatch(p: RolloutPatch): string {
  const parts: string[] = [];
  if (p.percent !== undefined) parts.push(`offered to ${p.percent}%`);
  if (p.paused !== undefined) parts.push(p.paused ? "paused" : "resumed");
  if (p.steps) parts.push(`schedule ${p.steps.join(" → ")}% every ${p.stepSeconds ?? "?"} s`);
  if (p.maxFailureRate !== undefined || p.minDevices !== undefined) {
    parts.push(
      `failure policy ${[p.maxFailureRate !== undefined ? `pause above ${Math.round(p.maxFailureRate * 100)}%` : "", p.minDevices !== undefined ? `once ${p.minDevices} devices took it` : ""].filter(Boolean).join(" ")}`,
    );
  }
  return parts.join(", ");
}
