// The dashboard's routes under /ui/: sign-in, the pages, the live chart fragment and the form
// actions. Every page but sign-in needs a session, and every POST also the session's CSRF token
// (form field `csrf`): both are checked by access.ts before a handler runs. Actions call the same
// Fleet operations as the API, then redirect back (POST/redirect/GET) with a flash message: what
// was done, or the UserError that refused it.
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import * as ids from "../../contract/ids.js";
import { rolloutPatch } from "../../contract/rollout.js";
import { AccessDenied, parseInput, UserError } from "../../errors.js";
import type { Fleet, RolloutPatch } from "../../fleet/fleet.js";
import { checkTransport, operatorOf } from "../access.js";
import { deviceFilter, deviceQuery } from "../api-routes.js";
import type { Auth } from "../auth.js";
import { errorReply } from "../server.js";
import type { Sessions } from "../sessions.js";
import { chartInput } from "./chart.js";
import { deviceHref, rolloutHref } from "./components.js";
import type { Html } from "./html.js";
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

const FLASH_COOKIE = "basalt_flash";

/** A form field: the first value of a repeated one, trimmed; an empty one is absent. */
const field = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => {
    const x = Array.isArray(v) ? v[0] : v;
    return typeof x === "string" && x.trim() === "" ? undefined : typeof x === "string" ? x.trim() : x;
  }, schema.optional());
const many = z.preprocess((v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]), z.array(z.string().max(200)).max(10_000));
/** Every form carries its CSRF token (checked before the handler, see access.ts). */
const formOf = <T extends z.ZodRawShape>(shape: T) => z.looseObject({ csrf: field(z.string().max(200)), ...shape });

const rollout = z.object({ id: ids.imageId, channel: ids.channel, version: ids.version });
const device = z.object({ id: ids.imageId, machine: ids.machineId });
const text = field(z.string().max(400));
const rolloutForm = formOf({
  percent: text,
  paused: field(z.enum(["true", "false"]).transform((v) => v === "true")),
  steps: text,
  stepSeconds: text,
  minDevices: text,
  maxFailurePercent: text,
  reason: field(z.string().max(200)),
});

/** A number as the operator typed it; what it may be is the rollout schema's to say. */
function typedNumber(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UserError(`${name}: not a number: ${JSON.stringify(v)}`);
  return n;
}

/**
 * Rollout settings from a form, checked by the one rollout schema; a refusal comes back as a flash
 * message on the page, like any other the Fleet gives.
 */
function rolloutFromForm(f: z.infer<typeof rolloutForm>): RolloutPatch {
  const patch: Record<string, unknown> = {};
  if (f.percent !== undefined) patch.percent = typedNumber("percent", f.percent);
  if (f.paused !== undefined) patch.paused = f.paused;
  if (f.steps !== undefined) patch.steps = f.steps.split(",").map((x) => typedNumber("steps", x.trim()));
  if (f.stepSeconds !== undefined) patch.stepSeconds = typedNumber("stepSeconds", f.stepSeconds);
  if (f.minDevices !== undefined) patch.minDevices = typedNumber("minDevices", f.minDevices);
  // Operators think of the failure threshold in percent; the rollout keeps it as a fraction.
  if (f.maxFailurePercent !== undefined) patch.maxFailureRate = typedNumber("maxFailurePercent", f.maxFailurePercent) / 100;
  return parseInput(rolloutPatch, patch, "rollout");
}

/** A path to go back to after signing in: only pages of this dashboard. */
function safeNext(next: string | undefined): string {
  return next?.startsWith("/ui/") && !next.startsWith("/ui/login") && !next.startsWith("/ui//") ? next : "/ui/";
}

export interface DashboardOptions {
  auth: Auth;
  sessions: Sessions;
  allowPlainHttp: boolean;
}

export function registerDashboard(scope: FastifyInstance, fleet: Fleet, o: DashboardOptions): void {
  const { auth, sessions } = o;
  // The flash message rides in a short-lived cookie, signed so no other site or subdomain can plant one.
  const setFlash = (reply: FastifyReply, flash: Flash) => {
    reply.setCookie(FLASH_COOKIE, JSON.stringify(flash), { path: "/ui", httpOnly: true, sameSite: "strict", secure: "auto", signed: true, maxAge: 60 });
  };
  const takeFlash = (req: FastifyRequest, reply: FastifyReply): Flash | undefined => {
    const value = req.cookies[FLASH_COOKIE];
    if (!value) return undefined;
    reply.clearCookie(FLASH_COOKIE, { path: "/ui" });
    const { valid, value: body } = req.unsignCookie(value);
    if (!valid || !body) return undefined;
    try {
      const f = JSON.parse(body) as Flash;
      return (f.kind === "ok" || f.kind === "error") && typeof f.text === "string" ? f : undefined;
    } catch {
      return undefined;
    }
  };

  /** What every page needs: who is signed in, the session's CSRF token, the flash message. */
  const context = (req: FastifyRequest, reply: FastifyReply, flash = true): PageContext | undefined => {
    const s = req.principal?.session;
    if (!s) return undefined;
    return { operator: s.operator, csrf: reply.generateCsrf({ userInfo: s.idHash }), flash: flash ? takeFlash(req, reply) : undefined, now: Date.now() };
  };
  const send = (reply: FastifyReply, page: Html, status = 200) => reply.code(status).type("text/html; charset=utf-8").send(page.value);
  const page = (req: FastifyRequest, reply: FastifyReply, render: (ctx: PageContext) => Html) => {
    const ctx = context(req, reply);
    return ctx ? send(reply, render(ctx)) : reply.redirect("/ui/login", 303);
  };

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

  scope.get("/", { config: { access: "public" } }, (_req, reply) => reply.redirect("/ui/", 302));

  void scope.register(
    async (plain) => {
      const ui = plain.withTypeProvider<ZodTypeProvider>();
      const config = { access: "dashboard" as const };
      ui.addHook("onRequest", async (_req, reply) => {
        reply
          .header("content-security-policy", CONTENT_SECURITY_POLICY)
          .header("x-content-type-options", "nosniff")
          .header("x-frame-options", "DENY")
          .header("referrer-policy", "same-origin")
          .header("cache-control", "no-store");
      });

      ui.setErrorHandler((error, req, reply) => {
        const ctx = context(req, reply, false);
        const code = (error as { code?: string }).code;
        if (code === "FST_CSRF_INVALID_TOKEN" || code === "FST_CSRF_MISSING_SECRET") {
          req.log.warn({ peer: req.ip, route: req.routeOptions.url, operator: req.principal?.operator }, "dashboard: change refused, bad CSRF token");
          const text = "This form did not carry a valid CSRF token (or your session changed); nothing was changed. Go back, reload and try again.";
          return send(reply, renderErrorPage(ctx, "Refused", text), 403);
        }
        const { status, message } = errorReply(error, req);
        if (error instanceof AccessDenied && status === 401) {
          return send(reply, renderErrorPage(undefined, "Not signed in", "Sign in to the dashboard first; nothing was changed."), 401);
        }
        const title =
          status === 500 ? "Internal error" : status === 404 ? "Not found" : status < 500 && !(error instanceof UserError) ? "Bad request" : "Refused";
        const text = status === 500 ? "Something went wrong on the server; the server log has the details." : message;
        return send(reply, renderErrorPage(ctx, title, text), status);
      });
      ui.setNotFoundHandler((req, reply) => send(reply, renderErrorPage(context(req, reply, false), "Not found", `Nothing at ${req.url}.`), 404));

      // Signing in ---------------------------------------------------------------------------

      // The form carries a CSRF token bound to no one yet, so another site cannot sign a browser in
      // to an account of its choosing (login CSRF).
      const loginForm = (reply: FastifyReply, f: { next: string; error?: string; name?: string }, status = 200) =>
        send(reply, renderLoginPage({ ...f, csrf: reply.generateCsrf({ userInfo: "sign-in" }), enabled: auth.enabled }), status);

      ui.get("/login", { config: { access: "public" }, schema: { querystring: z.looseObject({ next: field(z.string().max(2000)) }) } }, async (req, reply) => {
        const next = safeNext(req.query.next);
        if (await sessions.find(req)) return reply.redirect(next, 303);
        return loginForm(reply, { next });
      });

      ui.post(
        "/login",
        {
          config: { access: "public", rateLimit: { max: 30, timeWindow: 60_000 } },
          schema: { body: formOf({ name: field(z.string().max(64)), password: field(z.string().max(1024)), next: field(z.string().max(2000)) }) },
          preValidation: (req, reply, done) => plain.csrfProtection(req, reply, done),
        },
        async (req, reply) => {
          checkTransport(req, o.allowPlainHttp);
          const b = req.body;
          const next = safeNext(b.next);
          const name = b.name ?? "";
          const r = await auth.signIn(name, b.password ?? "", req.ip);
          if (!r.ok) {
            req.log.warn({ peer: req.ip, name, reason: r.reason }, "dashboard: sign-in refused");
            if (r.reason !== "wrong") reply.header("retry-after", String(r.retryAfterSeconds));
            const error =
              r.reason === "wrong"
                ? "Wrong name or password."
                : `Too many sign-ins ${r.reason === "busy" ? "at once" : "that failed from your address or for this name"}; try again in ${r.retryAfterSeconds} s.`;
            return loginForm(reply, { next, name, error }, r.reason === "wrong" ? 401 : 429);
          }
          // A new session id at every sign-in: an id planted before cannot be used after.
          const s = await sessions.open(req, reply, r.operator, r.credential);
          req.log.info({ operator: s.operator, peer: req.ip }, "dashboard: signed in");
          return reply.redirect(next, 303);
        },
      );

      ui.post("/logout", { config, schema: { body: formOf({}) } }, async (req, reply) => {
        await sessions.close(req, reply);
        return reply.redirect("/ui/login", 303);
      });

      ui.post("/logout-everywhere", { config, schema: { body: formOf({}) } }, async (req, reply) => {
        const operator = operatorOf(req);
        await sessions.closeAll(operator, operator);
        await sessions.close(req, reply, false);
        return reply.redirect("/ui/login", 303);
      });

      // Overview -----------------------------------------------------------------------------

      ui.get("/", { config }, async (req, reply) => {
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

      type RolloutParams = z.infer<typeof rollout>;
      /** The rollout's progress and chart, or undefined when the release is not offered on that channel. */
      const rolloutData = async ({ id, channel, version }: RolloutParams) => {
        const rollout = (await fleet.db.channel(id, channel))?.rollouts.find((r) => r.version === version);
        if (!rollout) return undefined;
        const progress = await fleet.progress(id, channel, version);
        return { progress, chart: chartInput(progress, fleet.now()) };
      };
      const notOffered = ({ id, channel, version }: RolloutParams) => `${id} ${version} is not offered on ${channel}.`;

      ui.get("/rollouts/:id/:channel/:version", { config, schema: { params: rollout } }, async (req, reply) => {
        const data = await rolloutData(req.params);
        if (!data) return send(reply, renderErrorPage(context(req, reply), "Not found", notOffered(req.params)), 404);
        const { progress, chart } = data;
        return page(req, reply, (ctx) => renderRolloutPage(ctx, { rollout: progress.rollout, stats: progress.stats, changes: progress.changes, chart }));
      });

      ui.get("/rollouts/:id/:channel/:version/chart", { config, schema: { params: rollout } }, async (req, reply) => {
        const data = await rolloutData(req.params);
        if (!data) return reply.code(404).type("text/plain; charset=utf-8").send(notOffered(req.params));
        return send(reply, renderRolloutProgress({ rollout: data.progress.rollout, stats: data.progress.stats, chart: data.chart }));
      });

      ui.post("/rollouts/:id/:channel/:version", { config, schema: { params: rollout, body: rolloutForm } }, async (req, reply) => {
        const { id, channel, version } = req.params;
        return act(reply, rolloutHref({ image: id, channel, version }), async () => {
          const patch = rolloutFromForm(req.body);
          if (!Object.keys(patch).length) throw new UserError("nothing to change: the form was empty");
          const reason = patch.paused ? (req.body.reason ?? null) : null;
          const r = await fleet.setRollout(id, channel, version, patch, operatorOf(req), reason);
          return { text: `${id} ${version} on ${channel}: ${describePatch(patch)}${r.paused && patch.paused === undefined ? " (still paused)" : ""}.` };
        });
      });

      // Devices ------------------------------------------------------------------------------

      ui.get("/devices", { config, schema: { querystring: deviceQuery } }, async (req, reply) => {
        const query: Record<string, string | undefined> = {};
        for (const [k, v] of Object.entries(req.query)) if (v !== undefined) query[k] = String(v === true ? "1" : v);
        const filter = deviceFilter({ limit: PAGE_SIZE, ...req.query });
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

      const groupForm = formOf({ query: field(z.string().max(2000)), device: many, group: field(z.string().max(64)) });
      ui.post("/devices/group", { config, schema: { body: groupForm } }, async (req, reply) => {
        const b = req.body;
        const query = b.query;
        return act(reply, `/ui/devices${query?.startsWith("?") ? query : ""}`, async () => {
          const selected = b.device;
          if (!selected.length) throw new UserError("select the devices whose group to set first");
          const byImage = new Map<string, string[]>();
          for (const s of selected) {
            const [image, machine] = s.split("/");
            if (!image || !machine) throw new UserError(`not a device: ${s}`);
            byImage.set(image, [...(byImage.get(image) ?? []), machine]);
          }
          const group = b.group ?? null;
          let changed = 0;
          for (const [image, machines] of byImage) changed += await fleet.setGroup(image, machines, group, operatorOf(req));
          return {
            text: group
              ? `${changed} ${changed === 1 ? "device" : "devices"} now in group ${group}.`
              : `Group cleared on ${changed} ${changed === 1 ? "device" : "devices"}.`,
          };
        });
      });

      ui.get("/devices/:id/:machine", { config, schema: { params: device } }, async (req, reply) => {
        const { id, machine } = req.params;
        const device = await fleet.db.device(id, machine);
        if (!device) return send(reply, renderErrorPage(context(req, reply), "Not found", `No device ${machine} of ${id} has checked in.`), 404);
        const [events, pins, releases] = await Promise.all([fleet.db.events({ image: id, machine, limit: 50 }), fleet.db.pins(id), fleet.db.releases(id)]);
        const applying = pins.filter((p) => (p.scope === "device" && p.target === machine) || (p.scope === "group" && p.target === device.group));
        return page(req, reply, (ctx) => renderDevicePage(ctx, { device, events, pins: applying, versions: releases.map((r) => r.version) }));
      });

      ui.post("/devices/:id/:machine/pin", { config, schema: { params: device, body: formOf({ version: field(z.string().max(64)) }) } }, async (req, reply) => {
        const { id, machine } = req.params;
        return act(reply, deviceHref({ image: id, machine }), async () => {
          const version = req.body.version;
          if (!version) throw new UserError("choose the version to pin the device to");
          await fleet.pin(id, "device", machine, parseInput(ids.version, version, "version"), operatorOf(req));
          return { text: `Device pinned to ${id} ${version}.` };
        });
      });

      ui.post("/devices/:id/:machine/unpin", { config, schema: { params: device, body: formOf({}) } }, async (req, reply) => {
        const { id, machine } = req.params;
        return act(reply, deviceHref({ image: id, machine }), async () => {
          if (!(await fleet.unpin(id, "device", machine, operatorOf(req)))) throw new UserError("this device was not pinned");
          return { text: "Device unpinned: it follows its channel again." };
        });
      });

      ui.post("/devices/:id/:machine/group", { config, schema: { params: device, body: formOf({ group: field(z.string().max(64)) }) } }, async (req, reply) => {
        const { id, machine } = req.params;
        return act(reply, deviceHref({ image: id, machine }), async () => {
          const group = req.body.group ?? null;
          if (!(await fleet.setGroup(id, [machine], group, operatorOf(req)))) throw new UserError(`no device ${machine} of ${id} has checked in`);
          return { text: group ? `Device now in group ${group}.` : "Device removed from its group." };
        });
      });

      // Releases and pins --------------------------------------------------------------------

      ui.get("/releases", { config }, async (req, reply) => {
        const [releases, channels, pins] = await Promise.all([fleet.db.releases(), fleet.db.channels(), fleet.db.pins()]);
        const offeredOn = new Map<string, string[]>();
        for (const c of channels)
          for (const r of c.rollouts) offeredOn.set(`${c.image} ${r.version}`, [...(offeredOn.get(`${c.image} ${r.version}`) ?? []), c.channel]);
        return page(req, reply, (ctx) => renderReleasesPage(ctx, { releases, offeredOn, channels: [...new Set(channels.map((c) => c.channel))], pins }));
      });

      const promoteForm = rolloutForm.extend({ channel: field(z.string().max(64)) });
      ui.post(
        "/releases/:id/:version/promote",
        { config, schema: { params: z.object({ id: ids.imageId, version: ids.version }), body: promoteForm } },
        async (req, reply) => {
          const { id, version } = req.params;
          return act(reply, "/ui/releases", async () => {
            const channel = parseInput(ids.channel, req.body.channel ?? "", "channel");
            const { paused: _, ...options } = rolloutFromForm(req.body);
            const c = await fleet.promote(id, channel, version, operatorOf(req), options);
            const r = c.rollouts.find((x) => x.version === version);
            return {
              text: `${id} ${version} offered on ${channel} to ${r?.percent ?? options.percent}% of its devices.`,
              to: rolloutHref({ image: id, channel, version }),
            };
          });
        },
      );

      const pinForm = formOf({ image: field(z.string().max(64)), group: field(z.string().max(64)), version: field(z.string().max(64)) });
      ui.post("/pins", { config, schema: { body: pinForm } }, async (req, reply) => {
        const b = req.body;
        return act(reply, "/ui/releases", async () => {
          const image = parseInput(ids.imageId, b.image ?? "", "image");
          const group = b.group ?? "";
          const version = parseInput(ids.version, b.version ?? "", "version");
          await fleet.pin(image, "group", group, version, operatorOf(req));
          return { text: `Group ${group} pinned to ${image} ${version}.` };
        });
      });

      const unpinForm = formOf({ image: field(z.string().max(64)), scope: field(z.enum(["device", "group"])), target: field(z.string().max(64)) });
      ui.post("/pins/unpin", { config, schema: { body: unpinForm } }, async (req, reply) => {
        const b = req.body;
        return act(reply, "/ui/releases", async () => {
          const scope = b.scope;
          if (!scope) throw new UserError("pin scope must be device or group");
          const target = b.target ?? "";
          if (!(await fleet.unpin(b.image ?? "", scope, target, operatorOf(req)))) throw new UserError(`no pin on ${scope} ${target}`);
          return { text: `Unpinned ${scope} ${target}.` };
        });
      });

      // Audit --------------------------------------------------------------------------------

      ui.get("/audit", { config }, async (req, reply) => {
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
