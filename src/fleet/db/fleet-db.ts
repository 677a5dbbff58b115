// The fleet database: releases, channels with their rollouts, pre-signed index snapshots, pins,
// devices and what happened to them, and the audit log. One implementation over the SQL driver
// serves SQLite and PostgreSQL alike; the shared test suite runs against both.
import type { ReleaseManifest } from "../../release/release.js";
import type { Change, Device, DeviceEvent, HeldView } from "../inventory.js";
import type { DeviceReport } from "../report.js";
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

export interface ReleaseStats {
  /** Devices that fetched the release's UKI or reported running it. */
  adopters: number;
  running: number;
  rolledBack: number;
  unhealthy: number;
  /** Devices that rolled back from it or were unhealthy on it. */
  failures: number;
}

export interface AuditEntry {
  seq: number;
  at: number;
  actor: string;
  action: string;
  detail: Record<string, unknown>;
}

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

  async beginUpload(m: ReleaseManifest, at: number): Promise<void> {
    await this.sql.run(
      "INSERT INTO uploads (image, version, manifest, started_at) VALUES (?, ?, ?, ?) ON CONFLICT (image, version) DO UPDATE SET manifest = excluded.manifest, started_at = excluded.started_at",
      [m.id, m.version, JSON.stringify(m), at],
    );
  }

  async upload(image: string, version: string): Promise<ReleaseManifest | undefined> {
    const r = await this.sql.get<{ manifest: string }>("SELECT manifest FROM uploads WHERE image = ? AND version = ?", [image, version]);
    return r ? (JSON.parse(r.manifest) as ReleaseManifest) : undefined;
  }

  /** Records a committed release and ends its upload; false when the version existed already. */
  async commitRelease(m: ReleaseManifest, at: number): Promise<boolean> {
    return this.sql.transaction(async (tx) => {
      const exists = await tx.get("SELECT 1 AS x FROM releases WHERE image = ? AND version = ?", [m.id, m.version]);
      if (exists) return false;
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
      return true;
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
    const r = await this.sql.get<DbRow>("SELECT view_snapshot, view_until, boot_id, booted_version FROM devices WHERE image = ? AND machine = ?", [
      image,
      machine,
    ]);
    return r ? { snapshot: s(r.view_snapshot), until: n(r.view_until), bootId: s(r.boot_id), bootedVersion: s(r.booted_version) } : undefined;
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
    return this.sql.transaction(async (tx) => {
      const row = await tx.get<DbRow>("SELECT * FROM devices WHERE image = ? AND machine = ? FOR UPDATE", [image, machine]);
      const out = change(row ? toDevice(row) : undefined);
      await tx.run(UPSERT_DEVICE, deviceParams(out.device));
      if (out.events.length) {
        await tx.run(
          `INSERT INTO device_events (image, machine, at, kind, version, detail) VALUES ${out.events.map(() => "(?, ?, ?, ?, ?, ?)").join(", ")}`,
          out.events.flatMap((e) => [image, machine, e.at, e.kind, e.version, e.detail ? JSON.stringify(e.detail) : null]),
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
    const count = async (kinds: string[]) =>
      Number(
        (
          await this.sql.get<{ c: number }>(
            `SELECT COUNT(DISTINCT machine) AS c FROM device_events WHERE image = ? AND version = ? AND kind IN (${kinds.map(() => "?").join(", ")})`,
            [image, version, ...kinds],
          )
        )?.c ?? 0,
      );
    const running = Number(
      (await this.sql.get<{ c: number }>("SELECT COUNT(*) AS c FROM devices WHERE image = ? AND booted_version = ?", [image, version]))?.c ?? 0,
    );
    return {
      adopters: await count(["downloaded", "booted"]),
      running,
      rolledBack: await count(["rollback"]),
      unhealthy: await count(["unhealthy"]),
      failures: await count(["rollback", "unhealthy"]),
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

  // Audit -----------------------------------------------------------------------------------

  async audit(at: number, actor: string, action: string, detail: Record<string, unknown>): Promise<void> {
    await this.sql.run("INSERT INTO audit (at, actor, action, detail) VALUES (?, ?, ?, ?)", [at, actor, action, JSON.stringify(detail)]);
  }

  async auditLog(limit = 100): Promise<AuditEntry[]> {
    const rows = await this.sql.all<DbRow>("SELECT * FROM audit ORDER BY seq DESC LIMIT ?", [limit]);
    return rows.map((r) => ({ seq: Number(r.seq), at: Number(r.at), actor: String(r.actor), action: String(r.action), detail: JSON.parse(String(r.detail)) }));
  }
}
