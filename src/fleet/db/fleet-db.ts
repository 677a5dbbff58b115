// The fleet database: releases, channels with their rollouts, pre-signed index snapshots, pins,
// devices and what happened to them, and the audit log. One implementation over the SQL driver
// serves SQLite and PostgreSQL alike; the shared test suite runs against both.
import { randomBytes } from "node:crypto";
import type { ReleaseManifest } from "../../contract/release-manifest.js";
import type { DeviceReport } from "../../contract/report.js";
import type { Change, Device, DeviceEvent, HeldView } from "../inventory.js";
import { migrate } from "./migrations.js";
import { openSql, type Param, type Sql } from "./sql.js";

export interface SnapshotRecord {
  image: string;
  hash: string;
  versions: string[];
  index: Buffer;
  signature: Buffer;
  armored: string;
}

export interface Rollout {
  image: string;
  channel: string;
  version: string;
  addedAt: number;
  /** The signed index a device offered this version sees. */
  snapshot: string;
  percent: number;
  paused: boolean;
  pauseReason: string | null;
  steps: number[] | null;
  stepSeconds: number | null;
  nextStepAt: number | null;
  maxFailureRate: number;
  minDevices: number;
  updatedAt: number;
}

export interface ChannelRecord {
  image: string;
  channel: string;
  /** The signed empty index: what a device sees when nothing is offered to it. */
  emptySnapshot: string;
  updatedAt: number;
  rollouts: Rollout[];
}

export interface RolloutChange {
  at: number;
  percent: number;
  paused: boolean;
  actor: string;
  reason: string | null;
}

export interface Pin {
  image: string;
  scope: "device" | "group";
  target: string;
  version: string;
  snapshot: string;
  actor: string;
  at: number;
}

export interface StoredEvent extends DeviceEvent {
  seq: number;
  image: string;
  machine: string;
}

export interface DeviceFilter {
  image?: string;
  version?: string;
  channel?: string;
  group?: string;
  health?: "healthy" | "unhealthy" | "unknown";
  duplicate?: boolean;
  /** Devices that rolled back at least once. */
  rolledBack?: boolean;
  /** Substring of the machine-id. */
  search?: string;
  limit?: number;
  offset?: number;
}

/**
 * A release's health as the automatic pause sees it: only evidence counts (DeviceEvent.evidence),
 * and every failure is a failure of a device that took the release, so failures <= adopters.
 */
export interface ReleaseStats {
  /** Devices that proved they fetched the release's UKI, or reported having it. */
  adopters: number;
  /** Devices whose last poll or report says they run it (not evidence). */
  running: number;
  rolledBack: number;
  unhealthy: number;
  /** Adopters that rolled back from it or were unhealthy on it. */
  failures: number;
}

/** A dashboard session, stored by the hash of its id. */
export interface SessionRecord {
  idHash: string;
  operator: string;
  /** A fingerprint of the credential it was opened with: when that changes or goes, so does the session. */
  credential: string;
  createdAt: number;
  expiresAt: number;
  peer: string;
}

export interface AuditEntry {
  seq: number;
  at: number;
  actor: string;
  action: string;
  detail: Record<string, unknown>;
}

/**
 * A release being uploaded. Its token names the attempt whose files the artifact store holds: a
 * commit records the release only while the token it read is current. Null while a begin or an
 * undone commit changes the files in the store: nothing can commit the upload then.
 */
export interface Upload {
  manifest: ReleaseManifest;
  token: string | null;
}

/** Another release, or another release's upload, has the file name already. */
export interface NameTaken {
  status: "taken";
  name: string;
  version: string;
  committed: boolean;
}

export type BeginUploadResult = { status: "begun" } | { status: "published"; manifest: ReleaseManifest } | NameTaken;

/** `restarted`: the upload is not the attempt the caller committed in the store any more (or is gone). */
export type CommitReleaseResult = { status: "committed" } | { status: "published"; manifest: ReleaseManifest } | { status: "restarted" } | NameTaken;

type DbRow = Record<string, unknown>;
const n = (v: unknown) => (v === null || v === undefined ? null : Number(v));
const s = (v: unknown) => (v === null || v === undefined ? null : String(v));
const json = <T>(v: unknown, fallback: T): T => (typeof v === "string" ? (JSON.parse(v) as T) : fallback);

function toDevice(r: DbRow): Device {
  return {
    image: String(r.image),
    machine: String(r.machine),
    arch: String(r.arch),
    channel: String(r.channel),
    group: s(r.grp),
    firstSeen: Number(r.first_seen),
    lastSeen: Number(r.last_seen),
    bootedVersion: s(r.booted_version),
    bootId: s(r.boot_id),
    prevBootId: s(r.prev_boot_id),
    bootSeenAt: n(r.boot_seen_at),
    reboots: Number(r.reboots),
    viewSnapshot: s(r.view_snapshot),
    viewUntil: n(r.view_until),
    downloadedVersion: s(r.downloaded_version),
    downloadedAt: n(r.downloaded_at),
    downloadedEvidence: Boolean(Number(r.downloaded_evidence)),
    rolledBack: json<string[]>(r.rolled_back, []),
    duplicate: Boolean(Number(r.duplicate)),
    healthy: r.healthy === null || r.healthy === undefined ? null : Boolean(Number(r.healthy)),
    report: json<DeviceReport | null>(r.report, null),
    reportAt: n(r.report_at),
  };
}

function toRollout(r: DbRow): Rollout {
  return {
    image: String(r.image),
    channel: String(r.channel),
    version: String(r.version),
    addedAt: Number(r.added_at),
    snapshot: String(r.snapshot),
    percent: Number(r.percent),
    paused: Boolean(Number(r.paused)),
    pauseReason: s(r.pause_reason),
    steps: json<number[] | null>(r.steps, null),
    stepSeconds: n(r.step_seconds),
    nextStepAt: n(r.next_step_at),
    maxFailureRate: Number(r.max_failure_rate),
    minDevices: Number(r.min_devices),
    updatedAt: Number(r.updated_at),
  };
}

function toPin(r: DbRow): Pin {
  return {
    image: String(r.image),
    scope: r.scope as Pin["scope"],
    target: String(r.target),
    version: String(r.version),
    snapshot: String(r.snapshot),
    actor: String(r.actor),
    at: Number(r.at),
  };
}

const DEVICE_COLUMNS = [
  "image",
  "machine",
  "arch",
  "channel",
  "grp",
  "first_seen",
  "last_seen",
  "booted_version",
  "boot_id",
  "prev_boot_id",
  "boot_seen_at",
  "reboots",
  "view_snapshot",
  "view_until",
  "downloaded_version",
  "downloaded_at",
  "downloaded_evidence",
  "rolled_back",
  "duplicate",
  "healthy",
  "report",
  "report_at",
] as const;

function deviceParams(d: Device): Param[] {
  return [
    d.image,
    d.machine,
    d.arch,
    d.channel,
    d.group,
    d.firstSeen,
    d.lastSeen,
    d.bootedVersion,
    d.bootId,
    d.prevBootId,
    d.bootSeenAt,
    d.reboots,
    d.viewSnapshot,
    d.viewUntil,
    d.downloadedVersion,
    d.downloadedAt,
    d.downloadedEvidence,
    JSON.stringify(d.rolledBack),
    d.duplicate,
    d.healthy,
    d.report ? JSON.stringify(d.report) : null,
    d.reportAt,
  ];
}

const UPSERT_DEVICE = `INSERT INTO devices (${DEVICE_COLUMNS.join(", ")}) VALUES (${DEVICE_COLUMNS.map(() => "?").join(", ")})
  ON CONFLICT (image, machine) DO UPDATE SET ${DEVICE_COLUMNS.slice(2)
    .map((c) => `${c} = excluded.${c}`)
    .join(", ")}`;

const ROLLOUT_COLUMNS = [
  "image",
  "channel",
  "version",
  "added_at",
  "snapshot",
  "percent",
  "paused",
  "pause_reason",
  "steps",
  "step_seconds",
  "next_step_at",
  "max_failure_rate",
  "min_devices",
  "updated_at",
] as const;

function rolloutParams(r: Rollout): Param[] {
  return [
    r.image,
    r.channel,
    r.version,
    r.addedAt,
    r.snapshot,
    r.percent,
    r.paused,
    r.pauseReason,
    r.steps ? JSON.stringify(r.steps) : null,
    r.stepSeconds,
    r.nextStepAt,
    r.maxFailureRate,
    r.minDevices,
    r.updatedAt,
  ];
}

export class FleetDb {
  private constructor(readonly sql: Sql) {}

  /** Opens (and migrates) the database at `url`: a SQLite file path or a postgres:// URL. */
  static async open(url: string): Promise<FleetDb> {
    const sql = await openSql(url);
    await migrate(sql);
    return new FleetDb(sql);
  }

  close(): Promise<void> {
    return this.sql.close();
  }

  // Releases --------------------------------------------------------------------------------

  /**
   * Starts (or restarts) the upload of a release, unless the version is published or another
   * release or upload has one of its file names. Its token is cleared: the caller empties the
   * store of earlier attempts, then calls `resumeUpload`.
   */
  async beginUpload(m: ReleaseManifest, at: number): Promise<BeginUploadResult> {
    return this.sql.transaction(async (tx) => {
      await this.lockReleases(tx);
      const published = await this.publishedIn(tx, m.id, m.version);
      if (published) return { status: "published", manifest: published };
      const taken = await this.takenIn(tx, m);
      if (taken) return taken;
      for (const u of await tx.all<{ version: string; manifest: string }>("SELECT version, manifest FROM uploads WHERE image = ? AND version <> ?", [
        m.id,
        m.version,
      ])) {
        const names = new Set((JSON.parse(u.manifest) as ReleaseManifest).files.map((f) => f.name));
        const f = m.files.find((x) => names.has(x.name));
        if (f) return { status: "taken", name: f.name, version: String(u.version), committed: false };
      }
      await tx.run(
        "INSERT INTO uploads (image, version, manifest, started_at, token) VALUES (?, ?, ?, ?, NULL) ON CONFLICT (image, version) DO UPDATE SET manifest = excluded.manifest, started_at = excluded.started_at, token = NULL",
        [m.id, m.version, JSON.stringify(m), at],
      );
      return { status: "begun" };
    });
  }

  async upload(image: string, version: string): Promise<Upload | undefined> {
    const r = await this.sql.get<{ manifest: string; token: string | null }>("SELECT manifest, token FROM uploads WHERE image = ? AND version = ?", [
      image,
      version,
    ]);
    return r ? { manifest: JSON.parse(r.manifest) as ReleaseManifest, token: r.token } : undefined;
  }

  /**
   * Records a release whose files the store committed, in one transaction: its rows, the end of its
   * upload and the audit entry; only while its upload is still at `token` and no other release has
   * one of its file names.
   */
  async commitRelease(m: ReleaseManifest, token: string, at: number, actor: string): Promise<CommitReleaseResult> {
    return this.sql.transaction(async (tx) => {
      await this.lockReleases(tx);
      const published = await this.publishedIn(tx, m.id, m.version);
      if (published) return { status: "published", manifest: published };
      const upload = await tx.get<{ token: string | null }>("SELECT token FROM uploads WHERE image = ? AND version = ?", [m.id, m.version]);
      if (upload?.token !== token) return { status: "restarted" };
      const taken = await this.takenIn(tx, m);
      if (taken) return taken;
      await tx.run("INSERT INTO releases (image, version, manifest, committed_at) VALUES (?, ?, ?, ?)", [m.id, m.version, JSON.stringify(m), at]);
      for (const f of m.files) {
        await tx.run("INSERT INTO release_files (image, name, version, kind, size, sha256) VALUES (?, ?, ?, ?, ?, ?)", [
          m.id,
          f.name,
          m.version,
          f.kind,
          f.size,
          f.sha256,
        ]);
      }
      await tx.run("DELETE FROM uploads WHERE image = ? AND version = ?", [m.id, m.version]);
      await tx.run("INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)", [
        at,
        actor,
        "commit",
        JSON.stringify({ id: m.id, version: m.version, files: m.files.length }),
      ]);
      return { status: "committed" };
    });
  }

  async release(image: string, version: string): Promise<ReleaseManifest | undefined> {
    const r = await this.sql.get<{ manifest: string }>("SELECT manifest FROM releases WHERE image = ? AND version = ?", [image, version]);
    return r ? (JSON.parse(r.manifest) as ReleaseManifest) : undefined;
  }

  async releases(image?: string): Promise<(ReleaseManifest & { committedAt: number })[]> {
    const rows = await this.sql.all<{ manifest: string; committed_at: number }>(
      `SELECT manifest, committed_at FROM releases ${image ? "WHERE image = ?" : ""} ORDER BY committed_at`,
      image ? [image] : [],
    );
    return rows.map((r) => ({ ...(JSON.parse(r.manifest) as ReleaseManifest), committedAt: Number(r.committed_at) }));
  }

  async releaseFile(image: string, name: string): Promise<{ version: string; kind: string; size: number; sha256: string } | undefined> {
    const r = await this.sql.get<DbRow>("SELECT version, kind, size, sha256 FROM release_files WHERE image = ? AND name = ?", [image, name]);
    return r ? { version: String(r.version), kind: String(r.kind), size: Number(r.size), sha256: String(r.sha256) } : undefined;
  }

  /** Every upload in progress. */
  async uploads(): Promise<Upload[]> {
    const rows = await this.sql.all<{ manifest: string; token: string | null }>("SELECT manifest, token FROM uploads ORDER BY started_at");
    return rows.map((r) => ({ manifest: JSON.parse(r.manifest) as ReleaseManifest, token: r.token }));
  }

  /** Clears the token of an upload that is still at `token` (before its files move in the store); false when it is not. */
  async suspendUpload(image: string, version: string, token: string): Promise<boolean> {
    return this.sql.transaction(async (tx) => {
      await this.lockReleases(tx);
      return (await tx.run("UPDATE uploads SET token = NULL WHERE image = ? AND version = ? AND token = ?", [image, version, token])).changes === 1;
    });
  }

  /** Gives an upload a new token once the store holds only its own files; undefined when the upload is gone. */
  async resumeUpload(image: string, version: string): Promise<string | undefined> {
    const token = randomBytes(16).toString("hex");
    return this.sql.transaction(async (tx) => {
      await this.lockReleases(tx);
      return (await tx.run("UPDATE uploads SET token = ? WHERE image = ? AND version = ?", [token, image, version])).changes === 1 ? token : undefined;
    });
  }

  /**
   * Release transactions take turns on PostgreSQL, as they do on SQLite (BEGIN IMMEDIATE): a begin
   * and a commit of the same version must not both read "not published" and then both act.
   */
  private async lockReleases(tx: Sql): Promise<void> {
    if (tx.dialect === "postgres") await tx.run("SELECT pg_advisory_xact_lock(4242002)");
  }

  private async publishedIn(tx: Sql, image: string, version: string): Promise<ReleaseManifest | undefined> {
    const r = await tx.get<{ manifest: string }>("SELECT manifest FROM releases WHERE image = ? AND version = ?", [image, version]);
    return r ? (JSON.parse(r.manifest) as ReleaseManifest) : undefined;
  }

  /** The first file name of `m` that another version's release has. */
  private async takenIn(tx: Sql, m: ReleaseManifest): Promise<NameTaken | undefined> {
    const names = m.files.map((f) => f.name);
    const r = await tx.get<{ name: string; version: string }>(
      `SELECT name, version FROM release_files WHERE image = ? AND version <> ? AND name IN (${names.map(() => "?").join(", ")}) ORDER BY name LIMIT 1`,
      [m.id, m.version, ...names],
    );
    return r ? { status: "taken", name: String(r.name), version: String(r.version), committed: true } : undefined;
  }

  // Snapshots -------------------------------------------------------------------------------

  async putSnapshot(snap: SnapshotRecord, at: number): Promise<void> {
    await this.sql.run(
      "INSERT INTO snapshots (image, hash, versions, index_data, signature, armored, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image, hash) DO NOTHING",
      [snap.image, snap.hash, JSON.stringify(snap.versions), snap.index, snap.signature, snap.armored, at],
    );
  }

  async hasSnapshot(image: string, hash: string): Promise<boolean> {
    return (await this.sql.get("SELECT 1 AS x FROM snapshots WHERE image = ? AND hash = ?", [image, hash])) !== undefined;
  }

  async snapshot(image: string, hash: string): Promise<SnapshotRecord | undefined> {
    const r = await this.sql.get<DbRow>("SELECT versions, index_data, signature, armored FROM snapshots WHERE image = ? AND hash = ?", [image, hash]);
    if (!r) return undefined;
    return {
      image,
      hash,
      versions: json<string[]>(r.versions, []),
      index: Buffer.from(r.index_data as Uint8Array),
      signature: Buffer.from(r.signature as Uint8Array),
      armored: String(r.armored),
    };
  }

  // Channels and rollouts -------------------------------------------------------------------

  async channel(image: string, channel: string): Promise<ChannelRecord | undefined> {
    const c = await this.sql.get<DbRow>("SELECT empty_snapshot, updated_at FROM channels WHERE image = ? AND channel = ?", [image, channel]);
    if (!c) return undefined;
    const rollouts = (await this.sql.all<DbRow>("SELECT * FROM rollouts WHERE image = ? AND channel = ? ORDER BY added_at", [image, channel])).map(toRollout);
    return { image, channel, emptySnapshot: String(c.empty_snapshot), updatedAt: Number(c.updated_at), rollouts };
  }

  async channels(): Promise<ChannelRecord[]> {
    const cs = await this.sql.all<DbRow>("SELECT image, channel, empty_snapshot, updated_at FROM channels ORDER BY image, channel");
    const rs = (await this.sql.all<DbRow>("SELECT * FROM rollouts ORDER BY added_at")).map(toRollout);
    return cs.map((c) => ({
      image: String(c.image),
      channel: String(c.channel),
      emptySnapshot: String(c.empty_snapshot),
      updatedAt: Number(c.updated_at),
      rollouts: rs.filter((r) => r.image === c.image && r.channel === c.channel),
    }));
  }

  /**
   * Offers a release on a channel in one transaction: the channel, the promoted release's rollout
   * (with a history entry) and the re-signed index of every other release on it (`snapshots`), so a
   * device sees either the old state or the new one.
   */
  async saveChannel(c: Omit<ChannelRecord, "rollouts">, promoted: Rollout, snapshots: Map<string, string>, actor: string): Promise<void> {
    await this.sql.transaction(async (tx) => {
      await tx.run(
        "INSERT INTO channels (image, channel, empty_snapshot, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (image, channel) DO UPDATE SET empty_snapshot = excluded.empty_snapshot, updated_at = excluded.updated_at",
        [c.image, c.channel, c.emptySnapshot, c.updatedAt],
      );
      await tx.run(
        `INSERT INTO rollouts (${ROLLOUT_COLUMNS.join(", ")}) VALUES (${ROLLOUT_COLUMNS.map(() => "?").join(", ")})
         ON CONFLICT (image, channel, version) DO UPDATE SET ${ROLLOUT_COLUMNS.slice(3)
           .map((k) => `${k} = excluded.${k}`)
           .join(", ")}`,
        rolloutParams(promoted),
      );
      for (const [version, snapshot] of snapshots) {
        if (version === promoted.version) continue;
        await tx.run("UPDATE rollouts SET snapshot = ? WHERE image = ? AND channel = ? AND version = ?", [snapshot, c.image, c.channel, version]);
      }
      await this.recordChange(tx, promoted, actor, "offered on the channel");
    });
  }

  private async recordChange(tx: Sql, r: Rollout, actor: string, reason: string | null): Promise<void> {
    await tx.run("INSERT INTO rollout_changes (image, channel, version, at, percent, paused, actor, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
      r.image,
      r.channel,
      r.version,
      r.updatedAt,
      r.percent,
      r.paused,
      actor,
      reason,
    ]);
  }

  /**
   * Changes one rollout if it is still as the caller read it (`updatedAt`): replicas that run the
   * same scheduled step or automatic pause at once apply it once. True when this call applied it.
   */
  async updateRollout(prev: Rollout, next: Rollout, actor: string, reason: string | null): Promise<boolean> {
    return this.sql.transaction(async (tx) => {
      // Everything but the key columns, from the same column list the insert uses.
      const r = await tx.run(
        `UPDATE rollouts SET ${ROLLOUT_COLUMNS.slice(3)
          .map((k) => `${k} = ?`)
          .join(", ")} WHERE image = ? AND channel = ? AND version = ? AND updated_at = ?`,
        [...rolloutParams(next).slice(3), prev.image, prev.channel, prev.version, prev.updatedAt],
      );
      if (r.changes !== 1) return false;
      await this.recordChange(tx, next, actor, reason);
      return true;
    });
  }

  async rollouts(): Promise<Rollout[]> {
    return (await this.sql.all<DbRow>("SELECT * FROM rollouts ORDER BY image, channel, added_at")).map(toRollout);
  }

  async rolloutChanges(image: string, channel: string, version: string): Promise<RolloutChange[]> {
    const rows = await this.sql.all<DbRow>(
      "SELECT at, percent, paused, actor, reason FROM rollout_changes WHERE image = ? AND channel = ? AND version = ? ORDER BY at, seq",
      [image, channel, version],
    );
    return rows.map((r) => ({ at: Number(r.at), percent: Number(r.percent), paused: Boolean(Number(r.paused)), actor: String(r.actor), reason: s(r.reason) }));
  }

  // Pins ------------------------------------------------------------------------------------

  async setPin(p: Pin): Promise<void> {
    await this.sql.run(
      "INSERT INTO pins (image, scope, target, version, snapshot, actor, at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image, scope, target) DO UPDATE SET version = excluded.version, snapshot = excluded.snapshot, actor = excluded.actor, at = excluded.at",
      [p.image, p.scope, p.target, p.version, p.snapshot, p.actor, p.at],
    );
  }

  async deletePin(image: string, scope: Pin["scope"], target: string): Promise<boolean> {
    return (await this.sql.run("DELETE FROM pins WHERE image = ? AND scope = ? AND target = ?", [image, scope, target])).changes > 0;
  }

  async pins(image?: string): Promise<Pin[]> {
    const rows = await this.sql.all<DbRow>(`SELECT * FROM pins ${image ? "WHERE image = ?" : ""} ORDER BY image, scope, target`, image ? [image] : []);
    return rows.map(toPin);
  }

  /** The pins that may apply to a device: its own, and every group's (which group it is in is the caller's to read). */
  async pinsFor(image: string, machine: string): Promise<Pin[]> {
    const rows = await this.sql.all<DbRow>("SELECT * FROM pins WHERE image = ? AND (scope = 'group' OR (scope = 'device' AND target = ?))", [image, machine]);
    return rows.map(toPin);
  }

  // Devices ---------------------------------------------------------------------------------

  /** Just the index snapshot a device is held on, and for which boot: the cheap read of every index request. */
  async heldView(image: string, machine: string): Promise<HeldView | undefined> {
    const r = await this.sql.get<DbRow>("SELECT view_snapshot, view_until, channel, boot_id, booted_version FROM devices WHERE image = ? AND machine = ?", [
      image,
      machine,
    ]);
    return r
      ? { snapshot: s(r.view_snapshot), until: n(r.view_until), channel: String(r.channel), bootId: s(r.boot_id), bootedVersion: s(r.booted_version) }
      : undefined;
  }

  async device(image: string, machine: string): Promise<Device | undefined> {
    const r = await this.sql.get<DbRow>("SELECT * FROM devices WHERE image = ? AND machine = ?", [image, machine]);
    return r ? toDevice(r) : undefined;
  }

  /**
   * Applies `change` to a device under its row lock and records the events it produced, so two
   * requests of one device (index and signature, at once) see each other's effect.
   */
  async updateDevice<T extends Change>(image: string, machine: string, change: (prev: Device | undefined) => T): Promise<T> {
    return this.changeDevice(image, machine, change) as Promise<T>;
  }

  /** Like updateDevice, for a device that has been seen before; nothing happens to one that has not. */
  async updateDeviceIfKnown(image: string, machine: string, change: (prev: Device) => Change): Promise<Change | undefined> {
    return this.changeDevice(image, machine, (prev) => (prev ? change(prev) : undefined));
  }

  private async changeDevice(image: string, machine: string, change: (prev: Device | undefined) => Change | undefined): Promise<Change | undefined> {
    return this.sql.transaction(async (tx) => {
      const row = await tx.get<DbRow>("SELECT * FROM devices WHERE image = ? AND machine = ? FOR UPDATE", [image, machine]);
      const out = change(row ? toDevice(row) : undefined);
      if (!out) return undefined;
      await tx.run(UPSERT_DEVICE, deviceParams(out.device));
      if (out.events.length) {
        await tx.run(
          `INSERT INTO device_events (image, machine, at, kind, version, evidence, detail) VALUES ${out.events.map(() => "(?, ?, ?, ?, ?, ?, ?)").join(", ")}`,
          out.events.flatMap((e) => [image, machine, e.at, e.kind, e.version, Boolean(e.evidence), e.detail ? JSON.stringify(e.detail) : null]),
        );
      }
      return out;
    });
  }

  async setGroup(image: string, machines: string[], group: string | null): Promise<number> {
    let changed = 0;
    await this.sql.transaction(async (tx) => {
      for (const m of machines) changed += (await tx.run("UPDATE devices SET grp = ? WHERE image = ? AND machine = ?", [group, image, m])).changes;
    });
    return changed;
  }

  private where(f: DeviceFilter): { clause: string; params: Param[] } {
    const parts: string[] = [];
    const params: Param[] = [];
    const add = (sql: string, ...p: Param[]) => {
      parts.push(sql);
      params.push(...p);
    };
    if (f.image) add("image = ?", f.image);
    if (f.version) add("booted_version = ?", f.version);
    if (f.channel) add("channel = ?", f.channel);
    if (f.group) add("grp = ?", f.group);
    if (f.health === "healthy") add("healthy = 1");
    if (f.health === "unhealthy") add("healthy = 0");
    if (f.health === "unknown") add("healthy IS NULL");
    if (f.duplicate !== undefined) add("duplicate = ?", f.duplicate);
    if (f.rolledBack !== undefined) add(f.rolledBack ? "rolled_back <> '[]'" : "rolled_back = '[]'");
    if (f.search) add("machine LIKE ?", `%${f.search.toLowerCase().replace(/[^0-9a-f]/g, "")}%`);
    return { clause: parts.length ? `WHERE ${parts.join(" AND ")}` : "", params };
  }

  async devices(f: DeviceFilter = {}): Promise<{ total: number; devices: Device[] }> {
    const { clause, params } = this.where(f);
    const total = Number((await this.sql.get<{ c: number }>(`SELECT COUNT(*) AS c FROM devices ${clause}`, params))?.c ?? 0);
    const rows = await this.sql.all<DbRow>(`SELECT * FROM devices ${clause} ORDER BY last_seen DESC, machine LIMIT ? OFFSET ?`, [
      ...params,
      Math.min(f.limit ?? 100, 1000),
      f.offset ?? 0,
    ]);
    return { total, devices: rows.map(toDevice) };
  }

  async events(filter: { image: string; machine?: string; version?: string; kinds?: string[]; limit?: number; afterSeq?: number }): Promise<StoredEvent[]> {
    const parts = ["image = ?"];
    const params: Param[] = [filter.image];
    if (filter.machine) {
      parts.push("machine = ?");
      params.push(filter.machine);
    }
    if (filter.version) {
      parts.push("version = ?");
      params.push(filter.version);
    }
    if (filter.kinds?.length) {
      parts.push(`kind IN (${filter.kinds.map(() => "?").join(", ")})`);
      params.push(...filter.kinds);
    }
    if (filter.afterSeq !== undefined) {
      parts.push("seq > ?");
      params.push(filter.afterSeq);
    }
    const rows = await this.sql.all<DbRow>(`SELECT * FROM device_events WHERE ${parts.join(" AND ")} ORDER BY seq ${filter.machine ? "DESC" : "ASC"} LIMIT ?`, [
      ...params,
      filter.limit ?? 1000,
    ]);
    return rows.map((r) => ({
      seq: Number(r.seq),
      image: String(r.image),
      machine: String(r.machine),
      at: Number(r.at),
      kind: r.kind as DeviceEvent["kind"],
      version: s(r.version),
      evidence: Boolean(Number(r.evidence)),
      ...(r.detail ? { detail: JSON.parse(String(r.detail)) as Record<string, unknown> } : {}),
    }));
  }

  /** For each device, when it first did each of `kinds` for `version`: the points of a progress chart. */
  async firstEvents(image: string, version: string, kinds: string[]): Promise<{ kind: string; machine: string; at: number }[]> {
    const rows = await this.sql.all<DbRow>(
      `SELECT kind, machine, MIN(at) AS at FROM device_events WHERE image = ? AND version = ? AND kind IN (${kinds.map(() => "?").join(", ")}) GROUP BY kind, machine ORDER BY at`,
      [image, version, ...kinds],
    );
    return rows.map((r) => ({ kind: String(r.kind), machine: String(r.machine), at: Number(r.at) }));
  }

  async releaseStats(image: string, version: string): Promise<ReleaseStats> {
    // One pass over the release's evidence: per device, whether it took the release and how it failed.
    const rows = await this.sql.all<DbRow>(
      `SELECT machine,
         MAX(CASE WHEN kind IN ('downloaded', 'booted', 'report') THEN 1 ELSE 0 END) AS took,
         MAX(CASE WHEN kind = 'rollback' THEN 1 ELSE 0 END) AS rolled_back,
         MAX(CASE WHEN kind = 'unhealthy' THEN 1 ELSE 0 END) AS unhealthy
       FROM device_events WHERE image = ? AND version = ? AND evidence = 1 AND kind IN ('downloaded', 'booted', 'report', 'rollback', 'unhealthy')
       GROUP BY machine`,
      [image, version],
    );
    const adopters = rows.filter((r) => Number(r.took) === 1);
    const running = Number(
      (await this.sql.get<{ c: number }>("SELECT COUNT(*) AS c FROM devices WHERE image = ? AND booted_version = ?", [image, version]))?.c ?? 0,
    );
    return {
      adopters: adopters.length,
      running,
      rolledBack: adopters.filter((r) => Number(r.rolled_back) === 1).length,
      unhealthy: adopters.filter((r) => Number(r.unhealthy) === 1).length,
      failures: adopters.filter((r) => Number(r.rolled_back) === 1 || Number(r.unhealthy) === 1).length,
    };
  }

  /** Devices per booted version, with how many of them are unhealthy: the fleet at a glance. */
  async versionCounts(image?: string): Promise<{ image: string; version: string | null; devices: number; unhealthy: number; duplicate: number }[]> {
    const rows = await this.sql.all<DbRow>(
      `SELECT image, booted_version, COUNT(*) AS c, SUM(CASE WHEN healthy = 0 THEN 1 ELSE 0 END) AS u, SUM(duplicate) AS d FROM devices ${image ? "WHERE image = ?" : ""} GROUP BY image, booted_version ORDER BY image, booted_version`,
      image ? [image] : [],
    );
    return rows.map((r) => ({
      image: String(r.image),
      version: s(r.booted_version),
      devices: Number(r.c),
      unhealthy: Number(r.u ?? 0),
      duplicate: Number(r.d ?? 0),
    }));
  }

  async eventCounts(): Promise<{ image: string; version: string | null; kind: string; count: number }[]> {
    const rows = await this.sql.all<DbRow>(
      "SELECT image, version, kind, COUNT(*) AS c FROM device_events WHERE kind IN ('rollback', 'unhealthy', 'report', 'downloaded') GROUP BY image, version, kind",
    );
    return rows.map((r) => ({ image: String(r.image), version: s(r.version), kind: String(r.kind), count: Number(r.c) }));
  }

  // Sessions --------------------------------------------------------------------------------

  async putSession(x: SessionRecord): Promise<void> {
    await this.sql.run("INSERT INTO sessions (id_hash, operator, credential, created_at, expires_at, peer) VALUES (?, ?, ?, ?, ?, ?)", [
      x.idHash,
      x.operator,
      x.credential,
      x.createdAt,
      x.expiresAt,
      x.peer,
    ]);
  }

  async session(idHash: string): Promise<SessionRecord | undefined> {
    const r = await this.sql.get<DbRow>("SELECT * FROM sessions WHERE id_hash = ?", [idHash]);
    return r
      ? {
          idHash: String(r.id_hash),
          operator: String(r.operator),
          credential: String(r.credential),
          createdAt: Number(r.created_at),
          expiresAt: Number(r.expires_at),
          peer: String(r.peer),
        }
      : undefined;
  }

  async deleteSession(idHash: string): Promise<boolean> {
    return (await this.sql.run("DELETE FROM sessions WHERE id_hash = ?", [idHash])).changes > 0;
  }

  /** Ends every session of `operator`: "sign out everywhere". */
  async deleteSessions(operator: string): Promise<number> {
    return (await this.sql.run("DELETE FROM sessions WHERE operator = ?", [operator])).changes;
  }

  async deleteExpiredSessions(now: number): Promise<number> {
    return (await this.sql.run("DELETE FROM sessions WHERE expires_at <= ?", [now])).changes;
  }

  // Audit -----------------------------------------------------------------------------------

  async audit(at: number, actor: string, action: string, detail: Record<string, unknown>): Promise<void> {
    await this.sql.run("INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)", [at, actor, action, JSON.stringify(detail)]);
  }

  async auditLog(limit = 100): Promise<AuditEntry[]> {
    const rows = await this.sql.all<DbRow>("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", [limit]);
    return rows.map((r) => ({ seq: Number(r.seq), at: Number(r.at), actor: String(r.actor), action: String(r.action), detail: JSON.parse(String(r.detail)) }));
  }
}
