// The fleet database's tables as the compiler sees them (`Database`, for Kysely), and for each table
// the one place where its rows become records and records become rows. JSON columns are read back
// through zod schemas and 0/1 columns become booleans; a row that does not read is a StoredDataError
// naming the table, the row's key and the column.
import type { Generated, Selectable } from "kysely";
import { z } from "zod";
import { firstIssue } from "../../contract/ids.js";
import { type IndexOffers, type RecordedManifest, recordedManifestSchema } from "../../contract/release-manifest.js";
import { deviceReportSchema } from "../../contract/report.js";
import { rolloutOptionsSchema } from "../../contract/rollout.js";
import type { Device, DeviceEvent, EventKind, HeldView } from "../inventory.js";
import type { AuditEntry, ChannelRecord, Pin, Rollout, RolloutChange, SessionRecord, SignedIndex, StoredEvent, Upload } from "./fleet-db.js";

/** Milliseconds since the epoch, sizes and counts: BIGINT, read as a JavaScript number on both engines (sql.ts). */
type Int = number;
/** 0 or 1 in an INTEGER column: SQLite has no boolean type, and both engines share one schema. */
type Flag = number;
/** JSON text; the column's comment says what it holds, and its schema below reads it. */
type Json = string;

/** A row of a table that cannot be read back: stored by something other than this code, or damaged. */
export class StoredDataError extends Error {
  constructor(
    readonly table: keyof Database,
    readonly key: Record<string, string | number>,
    readonly column: string,
    detail: string,
  ) {
    const where = Object.entries(key)
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");
    super(`fleet database: ${table} (${where}): column ${column} does not read as stored: ${detail}`);
    this.name = "StoredDataError";
  }
}

function readJson<S extends z.ZodType>(schema: S, text: Json, table: keyof Database, key: Record<string, string | number>, column: string): z.output<S> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new StoredDataError(table, key, column, `not JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(value);
  if (!r.success) throw new StoredDataError(table, key, column, firstIssue(r.error));
  return r.data;
}

const flag = (b: boolean): Flag => (b ? 1 : 0);

// Releases ------------------------------------------------------------------------------------

export interface ReleasesTable {
  image: string;
  version: string;
  /** RecordedManifest */
  manifest: Json;
  committed_at: Int;
}

export interface ReleaseFilesTable {
  image: string;
  name: string;
  version: string;
  kind: string;
  size: Int;
  sha256: string;
}

export interface UploadsTable {
  image: string;
  version: string;
  /** RecordedManifest */
  manifest: Json;
  started_at: Int;
  /** See Upload.token; '' for uploads begun before migration 3 (the column's default). */
  token: string | null;
}

export const releaseToRow = (m: RecordedManifest, at: number): Selectable<ReleasesTable> => ({
  image: m.id,
  version: m.version,
  manifest: JSON.stringify(m),
  committed_at: at,
});

export const releaseFromRow = (r: Pick<Selectable<ReleasesTable>, "image" | "version" | "manifest">): RecordedManifest =>
  readJson(recordedManifestSchema, r.manifest, "releases", { image: r.image, version: r.version }, "manifest");

export const releaseFileRows = (m: RecordedManifest): Selectable<ReleaseFilesTable>[] =>
  m.files.map((f) => ({ image: m.id, name: f.name, version: m.version, kind: f.kind, size: f.size, sha256: f.sha256 }));

export const uploadToRow = (m: RecordedManifest, at: number, token: string | null): Selectable<UploadsTable> => ({
  image: m.id,
  version: m.version,
  manifest: JSON.stringify(m),
  started_at: at,
  token,
});

export const uploadFromRow = (r: Pick<Selectable<UploadsTable>, "image" | "version" | "manifest" | "token">): Upload => ({
  manifest: readJson(recordedManifestSchema, r.manifest, "uploads", { image: r.image, version: r.version }, "manifest"),
  token: r.token,
});

// Signed indexes ------------------------------------------------------------------------------

export interface ReleaseIndexesTable {
  image: string;
  version: string;
  offers: IndexOffers;
  id: string;
  index_data: Buffer;
  signature: Buffer;
  armored: string;
  signing_key: string;
}

export const releaseIndexToRow = (x: SignedIndex): Selectable<ReleaseIndexesTable> => ({
  image: x.image,
  version: x.version,
  offers: x.offers,
  id: x.id,
  index_data: x.index,
  signature: x.signature,
  armored: x.armored,
  signing_key: x.signingKey,
});

export const releaseIndexFromRow = (r: Selectable<ReleaseIndexesTable>): SignedIndex => ({
  image: r.image,
  version: r.version,
  offers: r.offers,
  id: r.id,
  index: Buffer.from(r.index_data),
  signature: Buffer.from(r.signature),
  armored: r.armored,
  signingKey: r.signing_key,
});

// Channels and rollouts -----------------------------------------------------------------------

export interface ChannelsTable {
  image: string;
  channel: string;
  updated_at: Int;
}

export interface RolloutsTable {
  image: string;
  channel: string;
  version: string;
  added_at: Int;
  percent: number;
  paused: Flag;
  pause_reason: string | null;
  /** The schedule's percentages: number[] */
  steps: Json | null;
  step_seconds: Int | null;
  next_step_at: Int | null;
  max_failure_rate: number;
  min_devices: number;
  updated_at: Int;
}

export interface RolloutChangesTable {
  seq: Generated<Int>;
  image: string;
  channel: string;
  version: string;
  at: Int;
  percent: number;
  paused: Flag;
  actor: string;
  reason: string | null;
}

/** The schedule as an operator may give it (contract/rollout.ts). */
const rolloutStepsSchema = rolloutOptionsSchema.shape.steps.unwrap();

export const channelToRow = (c: Omit<ChannelRecord, "rollouts">): Selectable<ChannelsTable> => ({
  image: c.image,
  channel: c.channel,
  updated_at: c.updatedAt,
});

export const channelFromRow = (c: Selectable<ChannelsTable>, rollouts: Rollout[]): ChannelRecord => ({
  image: c.image,
  channel: c.channel,
  updatedAt: c.updated_at,
  rollouts,
});

/** Every column of a rollout but its key (image, channel, version): what an update sets. */
export const rolloutValues = (r: Rollout): Omit<Selectable<RolloutsTable>, "image" | "channel" | "version"> => ({
  added_at: r.addedAt,
  percent: r.percent,
  paused: flag(r.paused),
  pause_reason: r.pauseReason,
  steps: r.steps ? JSON.stringify(r.steps) : null,
  step_seconds: r.stepSeconds,
  next_step_at: r.nextStepAt,
  max_failure_rate: r.maxFailureRate,
  min_devices: r.minDevices,
  updated_at: r.updatedAt,
});

export const rolloutToRow = (r: Rollout): Selectable<RolloutsTable> => ({ image: r.image, channel: r.channel, version: r.version, ...rolloutValues(r) });

export const rolloutFromRow = (r: Selectable<RolloutsTable>): Rollout => ({
  image: r.image,
  channel: r.channel,
  version: r.version,
  addedAt: r.added_at,
  percent: r.percent,
  paused: r.paused !== 0,
  pauseReason: r.pause_reason,
  steps: r.steps === null ? null : readJson(rolloutStepsSchema, r.steps, "rollouts", { image: r.image, channel: r.channel, version: r.version }, "steps"),
  stepSeconds: r.step_seconds,
  nextStepAt: r.next_step_at,
  maxFailureRate: r.max_failure_rate,
  minDevices: r.min_devices,
  updatedAt: r.updated_at,
});

export const rolloutChangeToRow = (r: Rollout, actor: string, reason: string | null): Omit<Selectable<RolloutChangesTable>, "seq"> => ({
  image: r.image,
  channel: r.channel,
  version: r.version,
  at: r.updatedAt,
  percent: r.percent,
  paused: flag(r.paused),
  actor,
  reason,
});

export const rolloutChangeFromRow = (r: Pick<Selectable<RolloutChangesTable>, "at" | "percent" | "paused" | "actor" | "reason">): RolloutChange => ({
  at: r.at,
  percent: r.percent,
  paused: r.paused !== 0,
  actor: r.actor,
  reason: r.reason,
});

// Pins ----------------------------------------------------------------------------------------

export interface PinsTable {
  image: string;
  scope: Pin["scope"];
  target: string;
  version: string;
  actor: string;
  at: Int;
}

export const pinToRow = (p: Pin): Selectable<PinsTable> => ({
  image: p.image,
  scope: p.scope,
  target: p.target,
  version: p.version,
  actor: p.actor,
  at: p.at,
});

export const pinFromRow = (r: Selectable<PinsTable>): Pin => ({
  image: r.image,
  scope: r.scope,
  target: r.target,
  version: r.version,
  actor: r.actor,
  at: r.at,
});

// Devices and their events --------------------------------------------------------------------

export interface DevicesTable {
  image: string;
  machine: string;
  arch: string;
  channel: string;
  grp: string | null;
  first_seen: Int;
  last_seen: Int;
  booted_version: string | null;
  boot_id: string | null;
  prev_boot_id: string | null;
  boot_seen_at: Int | null;
  reboots: number;
  view_index: string | null;
  view_until: Int | null;
  downloaded_version: string | null;
  downloaded_at: Int | null;
  downloaded_evidence: Flag;
  /** Versions rolled back from: string[] ('[]' for none, which the device filter relies on) */
  rolled_back: Json;
  duplicate: Flag;
  healthy: Flag | null;
  /** The last report: DeviceReport */
  report: Json | null;
  report_at: Int | null;
}

export interface DeviceEventsTable {
  seq: Generated<Int>;
  image: string;
  machine: string;
  at: Int;
  kind: EventKind;
  version: string | null;
  evidence: Flag;
  /** Record<string, unknown> */
  detail: Json | null;
}

const rolledBackSchema = z.array(z.string());
const eventDetailSchema = z.record(z.string(), z.unknown());

/** Every column of a device but its key (image, machine): what an upsert of a known device sets. */
export const deviceValues = (d: Device): Omit<Selectable<DevicesTable>, "image" | "machine"> => ({
  arch: d.arch,
  channel: d.channel,
  grp: d.group,
  first_seen: d.firstSeen,
  last_seen: d.lastSeen,
  booted_version: d.bootedVersion,
  boot_id: d.bootId,
  prev_boot_id: d.prevBootId,
  boot_seen_at: d.bootSeenAt,
  reboots: d.reboots,
  view_index: d.viewIndex,
  view_until: d.viewUntil,
  downloaded_version: d.downloadedVersion,
  downloaded_at: d.downloadedAt,
  downloaded_evidence: flag(d.downloadedEvidence),
  rolled_back: JSON.stringify(d.rolledBack),
  duplicate: flag(d.duplicate),
  healthy: d.healthy === null ? null : flag(d.healthy),
  report: d.report ? JSON.stringify(d.report) : null,
  report_at: d.reportAt,
});

export const deviceToRow = (d: Device): Selectable<DevicesTable> => ({ image: d.image, machine: d.machine, ...deviceValues(d) });

export const deviceFromRow = (r: Selectable<DevicesTable>): Device => {
  const key = { image: r.image, machine: r.machine };
  return {
    image: r.image,
    machine: r.machine,
    arch: r.arch,
    channel: r.channel,
    group: r.grp,
    firstSeen: r.first_seen,
    lastSeen: r.last_seen,
    bootedVersion: r.booted_version,
    bootId: r.boot_id,
    prevBootId: r.prev_boot_id,
    bootSeenAt: r.boot_seen_at,
    reboots: r.reboots,
    viewIndex: r.view_index,
    viewUntil: r.view_until,
    downloadedVersion: r.downloaded_version,
    downloadedAt: r.downloaded_at,
    downloadedEvidence: r.downloaded_evidence !== 0,
    rolledBack: readJson(rolledBackSchema, r.rolled_back, "devices", key, "rolled_back"),
    duplicate: r.duplicate !== 0,
    healthy: r.healthy === null ? null : r.healthy !== 0,
    report: r.report === null ? null : readJson(deviceReportSchema, r.report, "devices", key, "report"),
    reportAt: r.report_at,
  };
};

/** The columns heldViewFromRow reads: the cheap read of every index request. */
export const HELD_VIEW_COLUMNS = ["view_index", "view_until", "channel", "boot_id", "booted_version"] as const;

export const heldViewFromRow = (r: Pick<Selectable<DevicesTable>, (typeof HELD_VIEW_COLUMNS)[number]>): HeldView => ({
  index: r.view_index,
  until: r.view_until,
  channel: r.channel,
  bootId: r.boot_id,
  bootedVersion: r.booted_version,
});

export const eventToRow = (image: string, machine: string, e: DeviceEvent): Omit<Selectable<DeviceEventsTable>, "seq"> => ({
  image,
  machine,
  at: e.at,
  kind: e.kind,
  version: e.version,
  evidence: flag(Boolean(e.evidence)),
  detail: e.detail ? JSON.stringify(e.detail) : null,
});

export const eventFromRow = (r: Selectable<DeviceEventsTable>): StoredEvent => ({
  seq: r.seq,
  image: r.image,
  machine: r.machine,
  at: r.at,
  kind: r.kind,
  version: r.version,
  evidence: r.evidence !== 0,
  ...(r.detail ? { detail: readJson(eventDetailSchema, r.detail, "device_events", { seq: r.seq }, "detail") } : {}),
});

// Sessions and the audit log ------------------------------------------------------------------

export interface SessionsTable {
  id_hash: string;
  operator: string;
  credential: string;
  created_at: Int;
  expires_at: Int;
  peer: string;
}

export interface AuditTable {
  seq: Generated<Int>;
  at: Int;
  actor: string;
  action: string;
  /** Record<string, unknown> */
  detail: Json;
}

const auditDetailSchema = z.record(z.string(), z.unknown());

export const sessionToRow = (x: SessionRecord): Selectable<SessionsTable> => ({
  id_hash: x.idHash,
  operator: x.operator,
  credential: x.credential,
  created_at: x.createdAt,
  expires_at: x.expiresAt,
  peer: x.peer,
});

export const sessionFromRow = (r: Selectable<SessionsTable>): SessionRecord => ({
  idHash: r.id_hash,
  operator: r.operator,
  credential: r.credential,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  peer: r.peer,
});

export const auditToRow = (at: number, actor: string, action: string, detail: Record<string, unknown>): Omit<Selectable<AuditTable>, "seq"> => ({
  at,
  actor,
  action,
  detail: JSON.stringify(detail),
});

export const auditFromRow = (r: Selectable<AuditTable>): AuditEntry => ({
  seq: r.seq,
  at: r.at,
  actor: r.actor,
  action: r.action,
  detail: readJson(auditDetailSchema, r.detail, "audit", { seq: r.seq }, "detail"),
});

// Migrations ----------------------------------------------------------------------------------

export interface SchemaMigrationsTable {
  version: number;
  name: string;
  applied_at: Int;
}

/** Every table and column of the fleet database (migrations.ts creates them), for Kysely. */
export interface Database {
  releases: ReleasesTable;
  release_files: ReleaseFilesTable;
  uploads: UploadsTable;
  release_indexes: ReleaseIndexesTable;
  channels: ChannelsTable;
  rollouts: RolloutsTable;
  rollout_changes: RolloutChangesTable;
  pins: PinsTable;
  devices: DevicesTable;
  device_events: DeviceEventsTable;
  audit: AuditTable;
  sessions: SessionsTable;
  schema_migrations: SchemaMigrationsTable;
}
