// The fleet server's operations, whichever front end asks (device routes, operator API, dashboard,
// scheduler): uploading and committing releases, offering them on channels with staged rollouts,
// pins, and what devices fetch and report. Signing happens only here, on operator actions: every
// index a device can be shown is signed when a channel, rollout or pin changes.
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { UserError } from "../errors.js";
import type { ReleaseManifest } from "../release/release.js";
import { checkFileName, renderSha256Sums } from "../release/sha256sums.js";
import { type Artifact, type ArtifactStore, checkName, VERSION } from "./artifacts/store.js";
import type { ChannelRecord, FleetDb, Pin, ReleaseStats, Rollout, RolloutChange, SnapshotRecord } from "./db/fleet-db.js";
import { applyDownload, applyPoll, applyReport, type Change, type DeviceEvent, heldSnapshot } from "./inventory.js";
import { type DeviceReport, deviceReportSchema } from "./report.js";
import { cohortVersions, nextStep, offeredRelease, shouldPause } from "./rollout.js";

export type Signer = (index: Buffer) => Promise<{ binary: Buffer; armored: string }>;

export interface RolloutOptions {
  /** Share of the channel's devices offered the release, 0–100 (default 100, or the first step). */
  percent?: number;
  /** A schedule: the percentages to go through, one every `stepSeconds` (an empty list removes it). */
  steps?: number[];
  stepSeconds?: number;
  /** Pause automatically when more than this share of the devices that took it failed (default 0.2). */
  maxFailureRate?: number;
  /** …counted only once this many devices took it (default 3). */
  minDevices?: number;
}

export interface RolloutPatch extends RolloutOptions {
  paused?: boolean;
}

export interface FleetOptions {
  db: FleetDb;
  artifacts: ArtifactStore;
  sign: Signer;
  /**
   * How long a device stays on the snapshot it was shown within one boot and version: the index and
   * its signature are requested at the same moment, so seconds are enough (default 30).
   */
  holdSeconds?: number;
  now?: () => number;
}

/** Where a device request comes from: the path of the stock client's URL. */
export interface DeviceRequest {
  channel: string;
  image: string;
  arch: string;
  machine: string;
  booted: string;
  boot?: string;
}

export interface RolloutProgress {
  rollout: Rollout;
  stats: ReleaseStats;
  changes: RolloutChange[];
  /** Devices following the channel: the 100% of the chart. */
  population: number;
  /** When each device first downloaded, ran, rolled back from or was unhealthy on the release. */
  points: { kind: string; machine: string; at: number }[];
}

const DEFAULT_POLICY = { maxFailureRate: 0.2, minDevices: 3 };

/**
 * What an index that offers nothing lists: systemd-pull 257 fails on an empty body ("Premature
 * connection termination", seen in the VM suite), so the index names one file no transfer pattern
 * can match (patterns start with `<image id>_`; this name has no '_').
 */
export const NOTHING_OFFERED = { name: "basalt-nothing-offered", sha256: createHash("sha256").update("").digest("hex") };

/** The bytes of an index listing `entries`, never empty. */
export function renderIndex(entries: { name: string; sha256: string }[]): Buffer {
  return Buffer.from(renderSha256Sums(entries.length ? entries : [NOTHING_OFFERED]));
}
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function checkRolloutOptions(o: RolloutPatch): void {
  const pct = (v: number) => Number.isFinite(v) && v >= 0 && v <= 100;
  if (o.percent !== undefined && !pct(o.percent)) throw new UserError(`rollout percent must be between 0 and 100, not ${o.percent}`);
  if (o.steps?.length) {
    if (!o.steps.every((v, i) => pct(v) && v > 0 && (i === 0 || v > (o.steps?.[i - 1] ?? 0)))) {
      throw new UserError("rollout steps must be rising percentages above 0, e.g. 10,50,100");
    }
    if (!o.stepSeconds || o.stepSeconds < 1) throw new UserError("a rollout schedule needs the time between steps (at least one second)");
  }
  if (o.maxFailureRate !== undefined && !(o.maxFailureRate >= 0 && o.maxFailureRate <= 1)) throw new UserError("max failure rate must be between 0 and 1");
  if (o.minDevices !== undefined && !(Number.isInteger(o.minDevices) && o.minDevices >= 1))
    throw new UserError("min devices must be a whole number of at least 1");
}

export class Fleet {
  readonly db: FleetDb;
  readonly artifacts: ArtifactStore;
  private readonly sign: Signer;
  private readonly holdMs: number;
  /** The fleet's clock (tests move it); audit entries and rollouts use it. */
  readonly now: () => number;
  /** Told about failures that must not fail the request that caused them (an automatic pause that did not apply). */
  onError: (e: Error, what: string) => void = () => undefined;
  private readonly snapshots = new Map<string, SnapshotRecord>();
  /**
   * Channels as device requests see them, for a second: most requests of a fleet ask about the same
   * few channels. Changes made here drop the entry at once; another replica's changes show within
   * the second (a device's held view is read from the database, so its index and signature still match).
   */
  private readonly channelCache = new Map<string, { until: number; record: ChannelRecord | undefined }>();
  private empty?: Promise<SnapshotRecord>;

  constructor(o: FleetOptions) {
    this.db = o.db;
    this.artifacts = o.artifacts;
    this.sign = o.sign;
    this.holdMs = (o.holdSeconds ?? 30) * 1000;
    this.now = o.now ?? Date.now;
  }

  // Releases --------------------------------------------------------------------------------

  async beginRelease(m: ReleaseManifest): Promise<void> {
    if (!m || typeof m.id !== "string" || typeof m.version !== "string" || !Array.isArray(m.files) || !m.files.length) {
      throw new UserError("a release manifest needs id, version and files");
    }
    checkName("image id", m.id);
    checkName("version", m.version, VERSION);
    if (await this.db.release(m.id, m.version)) throw new UserError(`${m.id} ${m.version} is already published; releases are immutable`);
    const seen = new Set<string>();
    for (const f of m.files) {
      checkFileName(f.name);
      if (seen.has(f.name)) throw new UserError(`release manifest: ${f.name} is listed twice`);
      seen.add(f.name);
      if (!/^[0-9a-f]{64}$/.test(f.sha256) || !Number.isSafeInteger(f.size) || f.size < 0) throw new UserError(`release manifest: bad entry for ${f.name}`);
      const other = await this.db.releaseFile(m.id, f.name);
      if (other) throw new UserError(`${f.name} belongs to ${m.id} ${other.version} already`);
    }
    await this.artifacts.discard(m.id, m.version);
    await this.db.beginUpload(m, this.now());
  }

  private async pending(id: string, version: string): Promise<ReleaseManifest> {
    checkName("image id", id);
    checkName("version", version, VERSION);
    const m = await this.db.upload(id, version);
    if (!m) throw new UserError(`no upload of ${id} ${version} in progress`);
    return m;
  }

  async putFile(id: string, version: string, name: string, body: Readable): Promise<void> {
    const m = await this.pending(id, version);
    const entry = m.files.find((f) => f.name === name);
    if (!entry) throw new UserError(`${name} is not a file of ${id} ${version}`);
    await this.artifacts.stage(id, version, body, entry);
  }

  async commitRelease(id: string, version: string, actor: string): Promise<ReleaseManifest> {
    const m = await this.pending(id, version);
    for (const f of m.files) {
      if ((await this.artifacts.stagedSize(id, version, f.name)) !== f.size) throw new UserError(`${f.name} has not been uploaded completely`);
    }
    await this.artifacts.commit(id, version);
    if (!(await this.db.commitRelease(m, this.now()))) throw new UserError(`${id} ${version} is already published; releases are immutable`);
    await this.db.audit(this.now(), actor, "commit", { id, version, files: m.files.length });
    return m;
  }

  // Signed indexes --------------------------------------------------------------------------

  /** The signed index listing exactly `versions` (content-addressed: signed once, then reused). */
  private async ensureSnapshot(image: string, versions: string[]): Promise<string> {
    const entries: { name: string; sha256: string }[] = [];
    for (const v of versions) {
      const m = await this.db.release(image, v);
      if (!m) throw new UserError(`${image} ${v} has not been published`);
      for (const f of m.files) {
        // A device must never be shown a file the store cannot serve.
        if (!(await this.artifacts.has(image, v, f.name))) throw new UserError(`${image} ${v}: ${f.name} is missing from the artifact store`);
        entries.push({ name: f.name, sha256: f.sha256 });
      }
    }
    const index = renderIndex(entries);
    const hash = sha256(index);
    if (!(await this.db.hasSnapshot(image, hash))) {
      const sig = await this.sign(index);
      await this.db.putSnapshot({ image, hash, versions, index, signature: sig.binary, armored: sig.armored }, this.now());
    }
    return hash;
  }

  private async loadSnapshot(image: string, hash: string): Promise<SnapshotRecord | undefined> {
    const key = `${image}/${hash}`;
    const cached = this.snapshots.get(key);
    if (cached) return cached;
    const snap = await this.db.snapshot(image, hash);
    if (!snap) return undefined;
    // Snapshots never change; a few hundred cover every cohort of every channel.
    if (this.snapshots.size >= 512) this.snapshots.delete(this.snapshots.keys().next().value as string);
    this.snapshots.set(key, snap);
    return snap;
  }

  /** The index that offers nothing, signed once: what a channel that does not exist shows. */
  private emptySnapshot(): Promise<SnapshotRecord> {
    const index = renderIndex([]);
    this.empty ??= this.sign(index).then((sig) => ({ image: "", hash: sha256(index), versions: [], index, signature: sig.binary, armored: sig.armored }));
    return this.empty;
  }

  // Channels, rollouts and pins -------------------------------------------------------------

  /** Offers a committed release on a channel, all at once or as a staged rollout. */
  async promote(image: string, channel: string, version: string, actor: string, options: RolloutOptions = {}): Promise<ChannelRecord> {
    checkName("channel", channel);
    checkRolloutOptions(options);
    if (!(await this.db.release(image, version))) throw new UserError(`${image} ${version} has not been published`);
    const prev = await this.db.channel(image, channel);
    const now = this.now();
    const old = prev?.rollouts ?? [];
    const versions = [...new Set([...old.map((r) => r.version), version])];
    const snapshots = new Map<string, string>();
    for (const v of versions) snapshots.set(v, await this.ensureSnapshot(image, cohortVersions(versions, v)));
    const base = old.find((r) => r.version === version);
    const steps = options.steps ?? base?.steps ?? null;
    const stepSeconds = options.stepSeconds ?? base?.stepSeconds ?? null;
    const percent = options.percent ?? options.steps?.[0] ?? base?.percent ?? 100;
    const rollout: Rollout = {
      image,
      channel,
      version,
      addedAt: base?.addedAt ?? now,
      snapshot: snapshots.get(version) as string,
      percent,
      paused: false,
      pauseReason: null,
      steps,
      stepSeconds,
      nextStepAt: steps && stepSeconds && nextStep({ steps, stepSeconds }, percent) !== undefined ? now + stepSeconds * 1000 : null,
      maxFailureRate: options.maxFailureRate ?? base?.maxFailureRate ?? DEFAULT_POLICY.maxFailureRate,
      minDevices: options.minDevices ?? base?.minDevices ?? DEFAULT_POLICY.minDevices,
      updatedAt: now,
    };
    const emptySnapshot = await this.ensureSnapshot(image, []);
    await this.db.saveChannel({ image, channel, emptySnapshot, updatedAt: now }, rollout, snapshots, actor);
    this.forgetChannel(image, channel);
    await this.db.audit(now, actor, "promote", { id: image, channel, version, percent, steps, stepSeconds });
    return (await this.db.channel(image, channel)) as ChannelRecord;
  }

  /** Raises, lowers, pauses or resumes a rollout, or changes its schedule or failure policy. */
  async setRollout(image: string, channel: string, version: string, patch: RolloutPatch, actor: string, reason: string | null = null): Promise<Rollout> {
    checkRolloutOptions(patch);
    for (let attempt = 0; ; attempt++) {
      const r = (await this.db.channel(image, channel))?.rollouts.find((x) => x.version === version);
      if (!r) throw new UserError(`${image} ${version} is not offered on ${channel}`);
      const now = Math.max(this.now(), r.updatedAt + 1);
      const next: Rollout = { ...r, updatedAt: now };
      if (patch.percent !== undefined) next.percent = patch.percent;
      // An empty list of steps ends the schedule.
      if (patch.steps !== undefined) next.steps = patch.steps.length ? patch.steps : null;
      if (patch.stepSeconds !== undefined) next.stepSeconds = patch.stepSeconds;
      if (patch.maxFailureRate !== undefined) next.maxFailureRate = patch.maxFailureRate;
      if (patch.minDevices !== undefined) next.minDevices = patch.minDevices;
      if (patch.paused !== undefined) {
        next.paused = patch.paused;
        next.pauseReason = patch.paused ? (reason ?? `paused by ${actor}`) : null;
      }
      const more = next.steps && next.stepSeconds ? nextStep({ steps: next.steps, stepSeconds: next.stepSeconds }, next.percent) : undefined;
      // A change restarts the clock of the schedule; a paused rollout does not advance.
      next.nextStepAt = more !== undefined && !next.paused && next.stepSeconds ? now + next.stepSeconds * 1000 : null;
      if (await this.db.updateRollout(r, next, actor, reason)) {
        this.forgetChannel(image, channel);
        await this.db.audit(now, actor, "rollout", { id: image, channel, version, ...patch, ...(reason ? { reason } : {}) });
        return next;
      }
      if (attempt >= 5) throw new UserError(`the rollout of ${image} ${version} on ${channel} keeps changing; try again`);
    }
  }

  /** Holds a device (or every device of a group) on `version`, whatever the channel's rollouts say. */
  async pin(image: string, scope: Pin["scope"], target: string, version: string, actor: string): Promise<Pin> {
    if (scope === "device" && !/^[0-9a-f]{32}$/.test(target)) throw new UserError(`not a machine-id: ${target}`);
    if (scope === "group") checkName("group", target);
    if (!(await this.db.release(image, version))) throw new UserError(`${image} ${version} has not been published`);
    const pin: Pin = { image, scope, target, version, snapshot: await this.ensureSnapshot(image, [version]), actor, at: this.now() };
    await this.db.setPin(pin);
    await this.db.audit(pin.at, actor, "pin", { id: image, scope, target, version });
    return pin;
  }

  async unpin(image: string, scope: Pin["scope"], target: string, actor: string): Promise<boolean> {
    const removed = await this.db.deletePin(image, scope, target);
    if (removed) await this.db.audit(this.now(), actor, "unpin", { id: image, scope, target });
    return removed;
  }

  async setGroup(image: string, machines: string[], group: string | null, actor: string): Promise<number> {
    if (group !== null) checkName("group", group);
    for (const m of machines) if (!/^[0-9a-f]{32}$/.test(m)) throw new UserError(`not a machine-id: ${m}`);
    const changed = await this.db.setGroup(image, machines, group);
    await this.db.audit(this.now(), actor, "group", { id: image, machines, group });
    return changed;
  }

  // What devices see ------------------------------------------------------------------------

  private async cachedChannel(image: string, channel: string): Promise<ChannelRecord | undefined> {
    const key = `${image}\0${channel}`;
    const hit = this.channelCache.get(key);
    if (hit && hit.until > performance.now()) return hit.record;
    const record = await this.db.channel(image, channel);
    if (this.channelCache.size > 1000) this.channelCache.clear();
    this.channelCache.set(key, { until: performance.now() + 1000, record });
    return record;
  }

  private forgetChannel(image: string, channel: string): void {
    this.channelCache.delete(`${image}\0${channel}`);
  }

  /** The signed index a device is shown now; records the poll. */
  async view(req: DeviceRequest): Promise<SnapshotRecord> {
    // The second request of a check (index and signature come together) finds the view the first
    // one chose and needs no write: half the index requests cost one read.
    const held = await this.db.heldView(req.image, req.machine);
    const snapshot = held && heldSnapshot(held, req, this.now());
    if (snapshot) {
      const snap = await this.loadSnapshot(req.image, snapshot);
      if (snap) return snap;
    }
    const [channel, pins] = await Promise.all([this.cachedChannel(req.image, req.channel), this.db.pinsFor(req.image, req.machine)]);
    if (!channel) return this.emptySnapshot();
    const devicePin = pins.find((p) => p.scope === "device");
    const out = await this.db.updateDevice(req.image, req.machine, (prev) => {
      const pin = devicePin ?? pins.find((p) => p.scope === "group" && p.target === prev?.group);
      const snapshot = pin?.snapshot ?? offeredRelease(channel.rollouts, req.image, req.machine)?.snapshot ?? channel.emptySnapshot;
      return applyPoll(prev, { ...req, at: this.now(), snapshot, holdMs: this.holdMs });
    });
    await this.afterEvents(req.image, out);
    return (await this.loadSnapshot(req.image, out.snapshot)) ?? (await this.emptySnapshot());
  }

  /** A release file the device may fetch (its version is on the channel, or pinned); records the download. */
  async download(req: DeviceRequest & { file: string }, record: boolean): Promise<Artifact | undefined> {
    const f = await this.db.releaseFile(req.image, req.file);
    if (!f) return undefined;
    const [channel, pins] = await Promise.all([this.cachedChannel(req.image, req.channel), this.db.pinsFor(req.image, req.machine)]);
    const onChannel = (c: ChannelRecord | undefined) => c?.rollouts.some((r) => r.version === f.version) ?? false;
    // A version another replica offered a moment ago may not be in this one's cache yet: ask again
    // before refusing a file the device was shown.
    const offered = onChannel(channel) || pins.some((p) => p.version === f.version) || onChannel(await this.db.channel(req.image, req.channel));
    if (!offered) return undefined;
    const artifact = await this.artifacts.locate(req.image, f.version, { name: req.file, size: f.size });
    if (artifact && record) {
      const at = this.now();
      await this.db.updateDevice(req.image, req.machine, (prev) => applyDownload(prev, { ...req, version: f.version, kind: f.kind, at }));
    }
    return artifact;
  }

  /** Records a device's report (its shape checked; authentication is the caller's). */
  async report(req: Omit<DeviceRequest, "booted">, body: unknown): Promise<DeviceReport> {
    const parsed = deviceReportSchema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new UserError(`bad report: ${issue ? `${issue.path.join(".") || "body"}: ${issue.message}` : "invalid"}`);
    }
    const at = this.now();
    const out = await this.db.updateDevice(req.image, req.machine, (prev) => applyReport(prev, parsed.data, { ...req, at }));
    await this.afterEvents(req.image, out);
    return parsed.data;
  }

  private async afterEvents(image: string, change: Change): Promise<void> {
    const versions = new Set(change.events.filter((e: DeviceEvent) => e.kind === "rollback" || e.kind === "unhealthy").map((e) => e.version));
    for (const v of versions) if (v) await this.checkHealth(image, v);
  }

  /** Pauses every running rollout of a release whose failure share crossed its threshold. */
  async checkHealth(image: string, version: string, all?: Rollout[]): Promise<void> {
    const rollouts = (all ?? (await this.db.rollouts())).filter((r) => r.image === image && r.version === version && !r.paused);
    if (!rollouts.length) return;
    const stats = await this.db.releaseStats(image, version);
    for (const r of rollouts) {
      if (!shouldPause(r, stats.adopters, stats.failures)) continue;
      const reason = `paused automatically: ${stats.failures} of ${stats.adopters} devices that took ${version} rolled back or were unhealthy (more than ${Math.round(r.maxFailureRate * 100)}%)`;
      // A device's request must not fail because the pause could not be written; the next tick tries again.
      await this.setRollout(image, r.channel, version, { paused: true }, "health", reason).catch((e: Error) =>
        this.onError(e, `pausing ${image} ${version} on ${r.channel}`),
      );
    }
  }

  /** Advances scheduled rollouts that are due and re-checks every running rollout's health. */
  async tick(): Promise<void> {
    const now = this.now();
    const all = await this.db.rollouts();
    for (const r of all) {
      if (r.paused) continue;
      if (r.nextStepAt !== null && r.nextStepAt <= now && r.steps && r.stepSeconds) {
        const step = nextStep({ steps: r.steps, stepSeconds: r.stepSeconds }, r.percent);
        if (step !== undefined) {
          const after = nextStep({ steps: r.steps, stepSeconds: r.stepSeconds }, step);
          const next: Rollout = {
            ...r,
            percent: step,
            nextStepAt: after !== undefined ? now + r.stepSeconds * 1000 : null,
            updatedAt: Math.max(now, r.updatedAt + 1),
          };
          // Another replica may have taken this step already; the conditional update applies it once.
          if (await this.db.updateRollout(r, next, "schedule", `scheduled step to ${step}%`)) {
            this.forgetChannel(r.image, r.channel);
            await this.db.audit(next.updatedAt, "schedule", "rollout", { id: r.image, channel: r.channel, version: r.version, percent: step });
          }
        }
      }
    }
    // Once per release, however many channels offer it; a pause re-reads the rollout it changes.
    const releases = new Map(all.filter((r) => !r.paused).map((r) => [`${r.image}\0${r.version}`, r]));
    for (const r of releases.values()) await this.checkHealth(r.image, r.version, all);
  }

  // Reads for the API and the dashboard -----------------------------------------------------

  async progress(image: string, channel: string, version: string): Promise<RolloutProgress> {
    const rollout = (await this.db.channel(image, channel))?.rollouts.find((r) => r.version === version);
    if (!rollout) throw new UserError(`${image} ${version} is not offered on ${channel}`);
    const [stats, changes, population, points] = await Promise.all([
      this.db.releaseStats(image, version),
      this.db.rolloutChanges(image, channel, version),
      this.db.devices({ image, channel, limit: 1 }).then((d) => d.total),
      this.db.firstEvents(image, version, ["downloaded", "booted", "rollback", "unhealthy"]),
    ]);
    return { rollout, stats, changes, population, points };
  }
}
