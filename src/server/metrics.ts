// GET /metrics in the Prometheus text format (prom-client): devices per booted version, rollout
// progress and state, failures and rollbacks per release, duplicate machine-ids. Read from the
// database at scrape time, so every replica reports the same fleet.
import type { FastifyInstance } from "fastify";
import { Gauge, Registry } from "prom-client";
import type { Fleet } from "../fleet/fleet.js";
import { operatorOf } from "./api-routes.js";
import type { Auth } from "./auth.js";

/** The registry, and the function that fills it from the database (prom-client collects metrics concurrently, so one read comes first). */
export function createMetrics(fleet: Fleet): { registry: Registry; read: () => Promise<void> } {
  const registry = new Registry();
  const devices = new Gauge({ name: "basalt_devices", help: "Devices by the version they booted.", labelNames: ["image", "version"], registers: [registry] });
  const unhealthy = new Gauge({
    name: "basalt_devices_unhealthy",
    help: "Devices whose last report was unhealthy, by booted version.",
    labelNames: ["image", "version"],
    registers: [registry],
  });
  const duplicates = new Gauge({
    name: "basalt_devices_duplicate_machine_id",
    help: "Machine-ids seen from more than one machine.",
    labelNames: ["image"],
    registers: [registry],
  });
  const percent = new Gauge({
    name: "basalt_rollout_percent",
    help: "Share of a channel's devices a release is offered to.",
    labelNames: ["image", "channel", "version"],
    registers: [registry],
  });
  const paused = new Gauge({
    name: "basalt_rollout_paused",
    help: "1 when the rollout is paused.",
    labelNames: ["image", "channel", "version"],
    registers: [registry],
  });
  const adopters = new Gauge({
    name: "basalt_release_adopters",
    help: "Devices that downloaded or ran a release.",
    labelNames: ["image", "version"],
    registers: [registry],
  });
  const running = new Gauge({
    name: "basalt_release_running",
    help: "Devices running a release now.",
    labelNames: ["image", "version"],
    registers: [registry],
  });
  const rollbacks = new Gauge({
    name: "basalt_release_rollbacks",
    help: "Devices that rolled back from a release.",
    labelNames: ["image", "version"],
    registers: [registry],
  });
  const failures = new Gauge({
    name: "basalt_release_failures",
    help: "Devices that rolled back from a release or were unhealthy on it.",
    labelNames: ["image", "version"],
    registers: [registry],
  });
  const reports = new Gauge({ name: "basalt_reports_total", help: "Device reports received.", labelNames: ["image"], registers: [registry] });

  const scraped = new Gauge({
    name: "basalt_fleet_scrape_timestamp_seconds",
    help: "When these figures were read from the fleet database.",
    registers: [registry],
  });

  async function readFleet(): Promise<void> {
    for (const g of [devices, unhealthy, duplicates, percent, paused, adopters, running, rollbacks, failures, reports]) g.reset();
    const dup = new Map<string, number>();
    for (const v of await fleet.db.versionCounts()) {
      const labels = { image: v.image, version: v.version ?? "unknown" };
      devices.set(labels, v.devices);
      unhealthy.set(labels, v.unhealthy);
      dup.set(v.image, (dup.get(v.image) ?? 0) + v.duplicate);
    }
    for (const [image, count] of dup) duplicates.set({ image }, count);
    const releases = new Set<string>();
    for (const r of await fleet.db.rollouts()) {
      const labels = { image: r.image, channel: r.channel, version: r.version };
      percent.set(labels, r.percent);
      paused.set(labels, r.paused ? 1 : 0);
      releases.add(`${r.image}\0${r.version}`);
    }
    for (const key of releases) {
      const [image = "", version = ""] = key.split("\0");
      const s = await fleet.db.releaseStats(image, version);
      adopters.set({ image, version }, s.adopters);
      running.set({ image, version }, s.running);
      rollbacks.set({ image, version }, s.rolledBack);
      failures.set({ image, version }, s.failures);
    }
    for (const e of await fleet.db.eventCounts()) if (e.kind === "report") reports.inc({ image: e.image }, e.count);
    scraped.set(Date.now() / 1000);
  }
  return { registry, read: readFleet };
}

export function registerMetrics(app: FastifyInstance, fleet: Fleet, auth: Auth, open: boolean): void {
  const { registry, read } = createMetrics(fleet);
  // Scrapes from several Prometheus servers at once share one read.
  let reading: Promise<void> | undefined;
  app.get("/metrics", async (req, reply) => {
    if (!open && !operatorOf(auth, req)) return reply.code(401).header("www-authenticate", "Bearer").send({ error: "a valid operator token is required" });
    reading ??= read().finally(() => {
      reading = undefined;
    });
    await reading;
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
