// GET /metrics in the Prometheus text format (prom-client): devices per booted version, rollout
// progress and state, failures and rollbacks per release, duplicate machine-ids. Read from the
// database at scrape time, so every replica reports the same fleet.
import type { FastifyInstance } from "fastify";
import { Gauge, Registry } from "prom-client";
import type { Fleet } from "../fleet/fleet.js";

/** The registry, and the function that fills it from the database (prom-client collects metrics concurrently, so one read comes first). */
export function createMetrics(fleet: Fleet): { registry: Registry; read: () => Promise<void> } {
  const registry = new Registry();
  const fleetGauges: Gauge[] = [];
  /** A gauge of figures read from the database: emptied before each read, so gone labels go too. */
  const gauge = (name: string, help: string, labelNames: string[]) => {
    const g = new Gauge({ name, help, labelNames, registers: [registry] });
    fleetGauges.push(g);
    return g;
  };
  const release = ["image", "version"];
  const rollout = ["image", "channel", "version"];
  const devices = gauge("basalt_devices", "Devices by the version they booted.", release);
  const unhealthy = gauge("basalt_devices_unhealthy", "Devices whose last report was unhealthy, by booted version.", release);
  const duplicates = gauge("basalt_devices_duplicate_machine_id", "Machine-ids seen from more than one machine.", ["image"]);
  const percent = gauge("basalt_rollout_percent", "Share of a channel's devices a release is offered to.", rollout);
  const paused = gauge("basalt_rollout_paused", "1 when the rollout is paused.", rollout);
  const adopters = gauge("basalt_release_adopters", "Devices that downloaded or ran a release.", release);
  const running = gauge("basalt_release_running", "Devices running a release now.", release);
  const rollbacks = gauge("basalt_release_rollbacks", "Devices that rolled back from a release.", release);
  const failures = gauge("basalt_release_failures", "Devices that rolled back from a release or were unhealthy on it.", release);
  const reports = gauge("basalt_reports_total", "Device reports received.", ["image"]);
  const scraped = new Gauge({
    name: "basalt_fleet_scrape_timestamp_seconds",
    help: "When these figures were read from the fleet database.",
    registers: [registry],
  });

  async function readFleet(): Promise<void> {
    for (const g of fleetGauges) g.reset();
    const dup = new Map<string, number>();
    // Versions come from devices' own words: only published ones become label values, the rest
    // count as "other", so anonymous polls cannot grow the metrics without bound.
    const published = new Set((await fleet.db.releases()).map((r) => `${r.id}\0${r.version}`));
    for (const v of await fleet.db.versionCounts()) {
      const version = v.version === null ? "unknown" : published.has(`${v.image}\0${v.version}`) ? v.version : "other";
      const labels = { image: v.image, version };
      devices.inc(labels, v.devices);
      unhealthy.inc(labels, v.unhealthy);
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

export function registerMetrics(app: FastifyInstance, fleet: Fleet, open: boolean): void {
  const { registry, read } = createMetrics(fleet);
  // Scrapes from several Prometheus servers at once share one read.
  let reading: Promise<void> | undefined;
  app.get("/metrics", { config: { access: open ? "public" : "operator" } }, async (_req, reply) => {
    reading ??= read().finally(() => {
      reading = undefined;
    });
    await reading;
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
