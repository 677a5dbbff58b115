// The fleet server's operations, whichever front end asks (device routes, operator API, dashboard,
// scheduler): uploading and committing releases, offering them on channels with staged rollouts,
// pins, and what devices fetch and report. The fleet holds no key and signs nothing: every index a
// device can be shown was signed when its release was made (the release's own, and one that offers
// nothing), and the fleet only chooses among them. A compromised server can withhold updates or
// show an older release's index, which a device ignores (it only moves forward); it cannot make a
// device accept anything the appliance's key did not sign.
import type { Readable } from "node:stream";
import * as ids from "../contract/ids.js";
import { type RecordedManifest, releaseManifestSchema } from "../contract/release-manifest.js";
import { type DeviceReport, deviceReportSchema } from "../contract/report.js";
import { type RolloutOptions, type RolloutPatch, rolloutPatch } from "../contract/rollout.js";
import { ConflictError, NotFoundError, parseInput, UserError } from "../errors.js";
import type { Artifact, ArtifactStore } from "./artifacts/store.js";
import type { ChannelRecord, FleetDb, NameTaken, Pin, ReleaseStats, Rollout, RolloutChange, SignedIndex, Upload } from "./db/fleet-db.js";
import { applyDownload, applyPoll, applyReport, type Change, type DeviceEvent, heldIndex } from "./inventory.js";
import { checkReleaseIndexes, unsignedReleaseError } from "./release-indexes.js";
import { includes, nextStep, offeredRelease, shouldPause } from "./rollout.js";

export type { RolloutOptions, RolloutPatch };

export interface FleetOptions {
  db: FleetDb;
  artifacts: ArtifactStore;
  /**
   * How long a device stays on the index it was shown within one boot and version: the index and
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

/** Signed indexes kept in memory: they never change once recorded, and a few hundred cover every release a fleet shows. */
const INDEX_CACHE_SIZE = 512;

/** A file a device may fetch: the release it belongs to, and since when it was offered to the device. */
export interface OfferedFile {
  version: string;
  kind: string;
  size: number;
  /** When the version was first offered to this device: its rollout's start, or its pin's. */
  offeredSince: number;
  artifact: Artifact;
}

export class Fleet {
  readonly db: FleetDb;
  readonly artifacts: ArtifactStore;
  private readonly holdMs: number;
  /** The fleet's clock (tests move it); audit entries and rollouts use it. */
  readonly now: () => number;
  /** Told about failures that must not fail the request that caused them (an automatic pause that did not apply). */
  onError: (e: Error, what: string) => void = () => undefined;
  /** Signed indexes by `image\0id` and by `image\0version` (a release's own). */
  private readonly byId = new Map<string, SignedIndex>();
  private readonly own = new Map<string, SignedIndex>();
  /**
   * Releases without an index of their own (recorded before migration 4), for a second each: they
   * may be published again with one, which this process sees at once and another replica's within
   * the second.
   */
  private readonly unsigned = new Map<string, number>();
  /**
   * Channels as device requests see them, for a second: most requests of a fleet ask about the same
   * few channels. Changes made here drop the entry at once; another replica's changes show within
   * the second (a device's held view is read from the database, so its index and signature still match).
   */
  private readonly channelCache = new Map<string, { until: number; record: ChannelRecord | undefined }>();
  /** Each image's index that offers nothing (its newest release's), for a second, as channels are. */
  private readonly emptyCache = new Map<string, { until: number; index: SignedIndex | undefined }>();

  constructor(o: FleetOptions) {
    this.db = o.db;
    this.artifacts = o.artifacts;
    this.holdMs = (o.holdSeconds ?? 30) * 1000;
    this.now = o.now ?? Date.now;
  }

  // Releases --------------------------------------------------------------------------------
  //
  // Publishing is atomic: a release is either recorded in the database with all its files in the
  // store's releases/, or not recorded and retryable. A commit moves the files in the store first
  // and then records the release in one transaction, which it undoes when the database refuses; a
  // process killed between the two leaves a commit that a retry (or recoverReleases) finishes. The
  // upload's token (see Upload) keeps a commit from recording files that a restarted upload replaced.

  /**
   * Starts (or restarts) the upload of a release, once its signed indexes are checked (a release
   * whose indexes do not belong to it leaves no trace). `committed` when this very release (the same
   * files) is published already: a retry of a publish whose commit went through, or the release of a
   * version published before releases carried their indexes, which records them.
   */
  async beginRelease(manifest: unknown, actor = "publish"): Promise<{ committed: boolean }> {
    const m = parseInput(releaseManifestSchema, manifest, "release manifest");
    const indexes = await checkReleaseIndexes(m);
    const begun = await this.db.beginUpload(m, this.now());
    if (begun.status === "published") {
      if (!this.sameRelease(begun.manifest, m)) throw new ConflictError(`${m.id} ${m.version} is already published; releases are immutable`);
      if (!begun.manifest.indexes && (await this.db.addIndexes(m, indexes, this.now(), actor))) this.forgetIndexes(m.id, m.version);
      return { committed: true };
    }
    if (begun.status === "taken") throw this.nameTaken(m.id, begun);
    // Whatever an earlier attempt left in the store goes before the upload can be committed: a
    // partial upload, or files a commit moved but did not get to record.
    await this.artifacts.discard(m.id, m.version);
    await this.db.resumeUpload(m.id, m.version);
    return { committed: false };
  }

  private async pending(id: string, version: string): Promise<Upload> {
    parseInput(ids.imageId, id, "image id");
    parseInput(ids.version, version, "version");
    const u = await this.db.upload(id, version);
    if (!u) throw new NotFoundError(`no upload of ${id} ${version} in progress`);
    return u;
  }

  async putFile(id: string, version: string, name: string, body: Readable): Promise<void> {
    const { manifest: m } = await this.pending(id, version);
    const entry = m.files.find((f) => f.name === name);
    if (!entry) throw new NotFoundError(`${name} is not a file of ${id} ${version}`);
    await this.artifacts.stage(id, version, body, entry);
  }

  /** Publishes an uploaded release; committing it again returns it. */
  async commitRelease(id: string, version: string, actor: string): Promise<RecordedManifest> {
    parseInput(ids.imageId, id, "image id");
    parseInput(ids.version, version, "version");
    // A retry of a commit that went through (its answer was lost, or the client was killed).
    const recorded = await this.db.release(id, version);
    if (recorded) return recorded;
    const { manifest: m, token } = await this.pending(id, version);
    if (token === null) throw new ConflictError(`the upload of ${id} ${version} is being restarted; upload it again`);
    // Nothing moves before every name is known to be free and every file to be there (uploaded, or
    // moved already by a commit that did not get to record the release).
    for (const f of m.files) {
      const other = await this.db.releaseFile(id, f.name);
      if (other && other.version !== version) throw this.nameTaken(id, { name: f.name, version: other.version, committed: true });
      if ((await this.artifacts.stagedSize(id, version, f.name)) !== f.size && (await this.artifacts.committedSize(id, version, f.name)) !== f.size) {
        throw new UserError(`${f.name} has not been uploaded completely`);
      }
    }
    return this.finishCommit(m, token, actor);
  }

  /**
   * Finishes the commits that stopped servers began: uploads whose files the store holds, some or
   * all of them committed, that the database did not record. Safe on any replica at any time (a
   * commit in progress elsewhere is recorded once); for start-up. Returns the releases it published.
   */
  async recoverReleases(actor = "recovery"): Promise<RecordedManifest[]> {
    const published: RecordedManifest[] = [];
    for (const { manifest: m, token } of await this.db.uploads()) {
      if (token === null) continue;
      let committed = 0;
      let complete = true;
      for (const f of m.files) {
        if ((await this.artifacts.committedSize(m.id, m.version, f.name)) === f.size) committed++;
        else if ((await this.artifacts.stagedSize(m.id, m.version, f.name)) !== f.size) complete = false;
      }
      // No file committed: nobody asked for a commit (an upload in progress, or abandoned).
      if (!complete || !committed) continue;
      try {
        published.push(await this.finishCommit(m, token, actor));
      } catch (e) {
        this.onError(e as Error, `finishing the commit of ${m.id} ${m.version}`);
      }
    }
    return published;
  }

  /**
   * The store's commit, then the database's record of it with the release's signed indexes (undone
   * in the store when the database refuses). The indexes are checked again first: an upload begun
   * by an older server carries none, and nothing moves for it.
   */
  private async finishCommit(m: RecordedManifest, token: string, actor: string): Promise<RecordedManifest> {
    const indexes = await checkReleaseIndexes(m);
    await this.artifacts.commit(m.id, m.version);
    let result: Awaited<ReturnType<FleetDb["commitRelease"]>>;
    try {
      result = await this.db.commitRelease(m, indexes, token, this.now(), actor);
    } catch (e) {
      await this.undoCommit(m, token);
      throw e;
    }
    switch (result.status) {
      case "committed":
        this.forgetIndexes(m.id, m.version);
        return m;
      // Recorded by another commit of the same upload that got there first.
      case "published":
        if (this.sameRelease(result.manifest, m)) return result.manifest;
        throw new ConflictError(`${m.id} ${m.version} is already published; releases are immutable`);
      // The files in the store are the restarted upload's business now.
      case "restarted":
        throw new ConflictError(`the upload of ${m.id} ${m.version} was restarted while it was committed; upload it again`);
      case "taken":
        await this.undoCommit(m, token);
        throw this.nameTaken(m.id, result);
    }
  }

  /**
   * Moves a commit's files back to the upload, so that the commit can be tried again; only while
   * the upload is still the one committed (a restarted upload's begin clears the store itself). When
   * even that cannot be asked, the commit is left for a retry or recoverReleases to finish.
   */
  private async undoCommit(m: RecordedManifest, token: string): Promise<void> {
    try {
      if (!(await this.db.suspendUpload(m.id, m.version, token))) return;
      try {
        await this.artifacts.uncommit(m.id, m.version);
      } finally {
        // Wherever the files are now, they are this upload's: it can be committed again.
        await this.db.resumeUpload(m.id, m.version);
      }
    } catch (e) {
      this.onError(e as Error, `undoing the commit of ${m.id} ${m.version} in the artifact store`);
    }
  }

  /** Whether two manifests publish the same files (the rest, such as the creation time, may differ). */
  private sameRelease(a: RecordedManifest, b: RecordedManifest): boolean {
    const files = (m: RecordedManifest) =>
      m.files
        .map((f) => `${f.name} ${f.kind} ${f.size} ${f.sha256}`)
        .sort()
        .join("\n");
    return a.id === b.id && a.version === b.version && files(a) === files(b);
  }

  private nameTaken(image: string, t: Pick<NameTaken, "name" | "version" | "committed">): ConflictError {
    return new ConflictError(
      t.committed ? `${t.name} belongs to ${image} ${t.version} already` : `${t.name} is reserved by the upload of ${image} ${t.version} in progress`,
    );
  }

  // Signed indexes --------------------------------------------------------------------------

  private remember(cache: Map<string, SignedIndex>, key: string, index: SignedIndex): SignedIndex {
    if (cache.size >= INDEX_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
    cache.set(key, index);
    return index;
  }

  private async indexById(image: string, id: string): Promise<SignedIndex | undefined> {
    const key = `${image}\0${id}`;
    const hit = this.byId.get(key);
    if (hit) return hit;
    const found = await this.db.indexById(image, id);
    return found && this.remember(this.byId, key, found);
  }

  /** A release's own signed index; undefined for a release recorded without one. */
  private async ownIndex(image: string, version: string): Promise<SignedIndex | undefined> {
    const key = `${image}\0${version}`;
    const hit = this.own.get(key);
    if (hit) return hit;
    if ((this.unsigned.get(key) ?? 0) > performance.now()) return undefined;
    const found = await this.db.releaseIndex(image, version, "release");
    if (found) return this.remember(this.own, key, found);
    if (this.unsigned.size > 1000) this.unsigned.clear();
    this.unsigned.set(key, performance.now() + 1000);
    return undefined;
  }

  /** Forgets what this process read about an image's indexes that a new release (or its indexes) changes. */
  private forgetIndexes(image: string, version: string): void {
    this.emptyCache.delete(image);
    this.unsigned.delete(`${image}\0${version}`);
  }

  /** What a device with nothing to do is shown: the image's newest release's index that offers nothing; undefined before its first release. */
  private async emptyIndex(image: string): Promise<SignedIndex | undefined> {
    const hit = this.emptyCache.get(image);
    if (hit && hit.until > performance.now()) return hit.index;
    const index = await this.db.newestEmptyIndex(image);
    if (this.emptyCache.size > 1000) this.emptyCache.clear();
    this.emptyCache.set(image, { until: performance.now() + 1000, index });
    return index;
  }

  /**
   * A committed release a device may be shown: it carries its own signed index, and the store has
   * every file it lists (a device must never be shown a file the store cannot serve).
   */
  private async offerable(image: string, version: string): Promise<void> {
    const m = await this.db.release(image, version);
    if (!m) throw new NotFoundError(`${image} ${version} has not been published`);
    if (!(await this.ownIndex(image, version))) throw unsignedReleaseError(image, version);
    for (const f of m.files) {
      if (!(await this.artifacts.has(image, version, f.name))) throw new UserError(`${image} ${version}: ${f.name} is missing from the artifact store`);
    }
  }

  // Channels, rollouts and pins -------------------------------------------------------------

  /** Offers a committed release on a channel, all at once or as a staged rollout. */
  async promote(image: string, channel: string, version: string, actor: string, options: RolloutOptions = {}): Promise<ChannelRecord> {
    parseInput(ids.channel, channel, "channel");
    parseInput(rolloutPatch, options, "rollout");
    await this.offerable(image, version);
    const prev = await this.db.channel(image, channel);
    const now = this.now();
    const base = prev?.rollouts.find((r) => r.version === version);
    const steps = options.steps ?? base?.steps ?? null;
    const stepSeconds = options.stepSeconds ?? base?.stepSeconds ?? null;
    const percent = options.percent ?? options.steps?.[0] ?? base?.percent ?? 100;
    const rollout: Rollout = {
      image,
      channel,
      version,
      addedAt: base?.addedAt ?? now,
      percent,
      // Offering a version again changes its rollout, never its pause: resuming is its own act.
      paused: base?.paused ?? false,
      pauseReason: base?.pauseReason ?? null,
      steps,
      stepSeconds,
      nextStepAt: steps && stepSeconds && !base?.paused && nextStep({ steps, stepSeconds }, percent) !== undefined ? now + stepSeconds * 1000 : null,
      maxFailureRate: options.maxFailureRate ?? base?.maxFailureRate ?? DEFAULT_POLICY.maxFailureRate,
      minDevices: options.minDevices ?? base?.minDevices ?? DEFAULT_POLICY.minDevices,
      updatedAt: now,
    };
    await this.db.saveChannel({ image, channel, updatedAt: now }, rollout, actor);
    this.forgetChannel(image, channel);
    await this.db.audit(now, actor, "promote", { id: image, channel, version, percent, steps, stepSeconds });
    return (await this.db.channel(image, channel)) as ChannelRecord;
  }

  /** Raises, lowers, pauses or resumes a rollout, or changes its schedule or failure policy. */
  async setRollout(image: string, channel: string, version: string, patch: RolloutPatch, actor: string, reason: string | null = null): Promise<Rollout> {
    parseInput(rolloutPatch, patch, "rollout");
    for (let attempt = 0; ; attempt++) {
      const r = (await this.db.channel(image, channel))?.rollouts.find((x) => x.version === version);
      if (!r) throw new NotFoundError(`${image} ${version} is not offered on ${channel}`);
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
      if (attempt >= 5) throw new ConflictError(`the rollout of ${image} ${version} on ${channel} keeps changing; try again`);
    }
  }

  /** Holds a device (or every device of a group) on `version`, whatever the channel's rollouts say. */
  async pin(image: string, scope: Pin["scope"], target: string, version: string, actor: string): Promise<Pin> {
    parseInput(scope === "device" ? ids.machineId : ids.group, target, scope);
    await this.offerable(image, version);
    const pin: Pin = { image, scope, target, version, actor, at: this.now() };
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
    if (group !== null) parseInput(ids.group, group, "group");
    for (const m of machines) parseInput(ids.machineId, m, "machine");
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

  /**
   * The signed index a device is shown now (records the poll): its pinned release's own, else the
   * newest release on its channel whose rollout includes it, else the one that offers nothing.
   * Undefined when the image has no release: there is no signed index to show (the device's check
   * fails and is retried on its next run).
   */
  async view(req: DeviceRequest): Promise<SignedIndex | undefined> {
    // The second request of a check (index and signature come together) finds the view the first
    // one chose and needs no write: half the index requests cost one read.
    const held = await this.db.heldView(req.image, req.machine);
    const heldId = held && heldIndex(held, req, this.now());
    if (heldId) {
      const index = await this.indexById(req.image, heldId);
      if (index) return index;
    }
    const [channel, pins, empty] = await Promise.all([
      this.cachedChannel(req.image, req.channel),
      this.db.pinsFor(req.image, req.machine),
      this.emptyIndex(req.image),
    ]);
    if (!empty || !channel) return empty;
    // The own indexes of the releases the device may be shown: those whose rollout includes it, and
    // the pinned ones (which group the device is in is read under its row lock below). A release
    // recorded without one (before migration 4) is never shown.
    const own = new Map<string, SignedIndex>();
    const candidates = [...channel.rollouts.filter((r) => includes(r, req.image, req.machine)).map((r) => r.version), ...pins.map((p) => p.version)];
    for (const v of new Set(candidates)) {
      const index = await this.ownIndex(req.image, v);
      if (index) own.set(v, index);
    }
    const offered = offeredRelease(
      channel.rollouts.filter((r) => own.has(r.version)),
      req.image,
      req.machine,
    );
    const devicePin = pins.find((p) => p.scope === "device");
    const out = await this.db.updateDevice(req.image, req.machine, (prev) => {
      const pin = devicePin ?? pins.find((p) => p.scope === "group" && p.target === prev?.group);
      const version = pin ? pin.version : offered?.version;
      const index = (version !== undefined && own.get(version)) || empty;
      return applyPoll(prev, { ...req, at: this.now(), index: index.id, holdMs: this.holdMs });
    });
    await this.afterEvents(req.image, out);
    return (await this.indexById(req.image, out.index)) ?? empty;
  }

  /** A release file the device may fetch: its version is on the device's channel, or pinned for it. */
  async offeredFile(req: DeviceRequest & { file: string }): Promise<OfferedFile | undefined> {
    const f = await this.db.releaseFile(req.image, req.file);
    if (!f) return undefined;
    const [cached, pins] = await Promise.all([this.cachedChannel(req.image, req.channel), this.db.pinsFor(req.image, req.machine)]);
    const since = (c: ChannelRecord | undefined) => c?.rollouts.find((r) => r.version === f.version)?.addedAt;
    // A version another replica offered a moment ago may not be in this one's cache yet: ask again
    // before refusing a file the device was shown.
    const onChannel = since(cached) ?? since(await this.db.channel(req.image, req.channel));
    const pinned = pins.filter((p) => p.version === f.version).map((p) => p.at);
    if (onChannel === undefined && !pinned.length) return undefined;
    const artifact = await this.artifacts.locate(req.image, f.version, { name: req.file, size: f.size });
    if (!artifact) return undefined;
    return { version: f.version, kind: f.kind, size: f.size, offeredSince: Math.min(onChannel ?? Number.POSITIVE_INFINITY, ...pinned), artifact };
  }

  /**
   * Records a download of `file` by a device that polled before (a machine-id never seen is not
   * recorded: devices check before they download). `complete` when this server sent every byte.
   */
  async recordDownload(req: DeviceRequest & { file: string }, file: OfferedFile, complete: boolean): Promise<void> {
    const at = this.now();
    await this.db.updateDeviceIfKnown(req.image, req.machine, (prev) =>
      applyDownload(prev, { version: file.version, file: req.file, kind: file.kind, at, complete, offeredSince: file.offeredSince }),
    );
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

  /** An entry in the audit log, on the fleet's clock: for what the server does besides these operations (sign-ins, tokens). */
  async record(actor: string, action: string, detail: Record<string, unknown>): Promise<void> {
    await this.db.audit(this.now(), actor, action, detail);
  }

  // Reads for the API and the dashboard -----------------------------------------------------

  async progress(image: string, channel: string, version: string): Promise<RolloutProgress> {
    const rollout = (await this.db.channel(image, channel))?.rollouts.find((r) => r.version === version);
    if (!rollout) throw new NotFoundError(`${image} ${version} is not offered on ${channel}`);
    const [stats, changes, population, points] = await Promise.all([
      this.db.releaseStats(image, version),
      this.db.rolloutChanges(image, channel, version),
      this.db.devices({ image, channel, limit: 1 }).then((d) => d.total),
      this.db.firstEvents(image, version, ["downloaded", "booted", "rollback", "unhealthy"]),
    ]);
    return { rollout, stats, changes, population, points };
  }
}
