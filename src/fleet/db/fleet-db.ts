// The fleet database: releases with the signed indexes they carry, channels with their rollouts, pins,
// devices and what happened to them, and the audit log. One implementation over Kysely serves
// SQLite and PostgreSQL alike (typed by `Database`, rows mapped in tables.ts); the shared test
// suite runs against both.
import { randomBytes } from "node:crypto";
import { type Expression, type ExpressionBuilder, type Kysely, type SqlBool, sql, type Transaction } from "kysely";
import type { IndexOffers, RecordedManifest } from "../../contract/release-manifest.js";
import type { Change, Device, DeviceEvent, EventKind, HeldView } from "../inventory.js";
import { migrate } from "./migrations.js";
import { type Engine, engineOf, openSql } from "./sql.js";
import {
  auditFromRow,
  auditToRow,
  channelFromRow,
  channelToRow,
  type Database,
  deviceFromRow,
  deviceToRow,
  deviceValues,
  eventFromRow,
  eventToRow,
  HELD_VIEW_COLUMNS,
  heldViewFromRow,
  pinFromRow,
  pinToRow,
  releaseFileRows,
  releaseFromRow,
  releaseIndexFromRow,
  releaseIndexToRow,
  releaseToRow,
  rolloutChangeFromRow,
  rolloutChangeToRow,
  rolloutFromRow,
  rolloutToRow,
  rolloutValues,
  sessionFromRow,
  sessionToRow,
  uploadFromRow,
  uploadToRow,
} from "./tables.js";

/** An index a device can be shown, with its signatures, byte for byte as `basalt release` made them. */
export interface SignedIndex {
  image: string;
  /** The release that carries it. */
  version: string;
  offers: IndexOffers;
  /** A content address of the index and both signatures: what a device's held view names. */
  id: string;
  index: Buffer;
  /** Binary (SHA256SUMS.gpg, what systemd-pull 257 fetches). */
  signature: Buffer;
  /** Armored (SHA256SUMS.asc, for newer clients). */
  armored: string;
  /** The fingerprint of the key both signatures verify against (checked when the release was recorded). */
  signingKey: string;
}

/** A recorded release, with when it was committed and the key its indexes are signed with (null: it has none, see migration 4). */
export type PublishedRelease = RecordedManifest & { committedAt: number; signedBy: string | null };

export interface Rollout {
  image: string;
  channel: string;
  version: string;
  addedAt: number;
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
  manifest: RecordedManifest;
  token: string | null;
}

/** Another release, or another release's upload, has the file name already. */
export interface NameTaken {
  status: "taken";
  name: string;
  version: string;
  committed: boolean;
}

export type BeginUploadResult = { status: "begun" } | { status: "published"; manifest: RecordedManifest } | NameTaken;

/** `restarted`: the upload is not the attempt the caller committed in the store any more (or is gone). */
export type CommitReleaseResult = { status: "committed" } | { status: "published"; manifest: RecordedManifest } | { status: "restarted" } | NameTaken;

/** Release transactions take turns on PostgreSQL under this advisory lock (see lockReleases). */
const RELEASES_LOCK = 4242002;

/** A transaction (FleetDb.transaction). Inside one, use it and never `this.kysely`: on SQLite that waits for the transaction's own connection. */
type Tx = Transaction<Database>;

export class FleetDb {
  private readonly engine: Engine;

  private constructor(
    /** The typed query builder over the database; FleetDb's methods are the way in, this is for tests and tools. */
    readonly kysely: Kysely<Database>,
  ) {
    this.engine = engineOf(kysely);
  }

  /** Opens (and migrates) the database at `url`: a SQLite file path or a postgres:// URL. */
  static async open(url: string): Promise<FleetDb> {
    const kysely = await openSql(url);
    try {
      await migrate(kysely);
    } catch (e) {
      await kysely.destroy();
      throw e;
    }
    return new FleetDb(kysely);
  }

  close(): Promise<void> {
    return this.kysely.destroy();
  }

  /**
   * Runs `fn` in one transaction. On SQLite it holds the one connection and the write lock from
   * BEGIN IMMEDIATE to COMMIT: transactions and single statements take turns, in order. On PostgreSQL
   * it holds a pooled connection; rows read with `lockForUpdate` stay locked until it ends.
   */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.kysely.transaction().execute(fn);
  }

  /** `SELECT … FOR UPDATE` on PostgreSQL; SQLite has no row locks and needs none (see `transaction`). */
  private lockForUpdate<Q extends { forUpdate(): Q }>(q: Q): Q {
    return this.engine === "postgres" ? q.forUpdate() : q;
  }

  // Releases --------------------------------------------------------------------------------

  /**
   * Starts (or restarts) the upload of a release, unless the version is published or another
   * release or upload has one of its file names. Its token is cleared: the caller empties the
   * store of earlier attempts, then calls `resumeUpload`.
   */
  async beginUpload(m: RecordedManifest, at: number): Promise<BeginUploadResult> {
    return this.transaction(async (tx) => {
      await this.lockReleases(tx);
      const published = await this.publishedIn(tx, m.id, m.version);
      if (published) return { status: "published", manifest: published };
      const taken = await this.takenIn(tx, m);
      if (taken) return taken;
      const others = await tx.selectFrom("uploads").selectAll().where("image", "=", m.id).where("version", "<>", m.version).execute();
      for (const u of others) {
        const names = new Set(uploadFromRow(u).manifest.files.map((f) => f.name));
        const f = m.files.find((x) => names.has(x.name));
        if (f) return { status: "taken", name: f.name, version: u.version, committed: false };
      }
      const row = uploadToRow(m, at, null);
      await tx
        .insertInto("uploads")
        .values(row)
        .onConflict((oc) => oc.columns(["image", "version"]).doUpdateSet({ manifest: row.manifest, started_at: row.started_at, token: null }))
        .execute();
      return { status: "begun" };
    });
  }

  async upload(image: string, version: string): Promise<Upload | undefined> {
    const r = await this.kysely.selectFrom("uploads").selectAll().where("image", "=", image).where("version", "=", version).executeTakeFirst();
    return r ? uploadFromRow(r) : undefined;
  }

  /**
   * Records a release whose files the store committed, in one transaction: its rows, its signed
   * indexes, the end of its upload and the audit entry; only while its upload is still at `token`
   * and no other release has one of its file names.
   */
  async commitRelease(m: RecordedManifest, indexes: SignedIndex[], token: string, at: number, actor: string): Promise<CommitReleaseResult> {
    return this.transaction(async (tx) => {
      await this.lockReleases(tx);
      const published = await this.publishedIn(tx, m.id, m.version);
      if (published) return { status: "published", manifest: published };
      const upload = await tx.selectFrom("uploads").select("token").where("image", "=", m.id).where("version", "=", m.version).executeTakeFirst();
      if (upload?.token !== token) return { status: "restarted" };
      const taken = await this.takenIn(tx, m);
      if (taken) return taken;
      await tx.insertInto("releases").values(releaseToRow(m, at)).execute();
      await tx.insertInto("release_files").values(releaseFileRows(m)).execute();
      if (indexes.length) await tx.insertInto("release_indexes").values(indexes.map(releaseIndexToRow)).execute();
      await tx.deleteFrom("uploads").where("image", "=", m.id).where("version", "=", m.version).execute();
      await tx
        .insertInto("audit")
        .values(auditToRow(at, actor, "commit", { id: m.id, version: m.version, files: m.files.length, signedBy: indexes[0]?.signingKey ?? null }))
        .execute();
      return { status: "committed" };
    });
  }

  /**
   * Records the signed indexes of a release published without them (before migration 4), and the
   * manifest that carries them (the same files), in one transaction with its audit entry; false
   * when the release has indexes already (releases are immutable) or is not published.
   */
  async addIndexes(m: RecordedManifest, indexes: SignedIndex[], at: number, actor: string): Promise<boolean> {
    return this.transaction(async (tx) => {
      await this.lockReleases(tx);
      const has = await tx.selectFrom("release_indexes").select("id").where("image", "=", m.id).where("version", "=", m.version).executeTakeFirst();
      if (has || !(await this.publishedIn(tx, m.id, m.version))) return false;
      await tx
        .updateTable("releases")
        .set({ manifest: JSON.stringify(m) })
        .where("image", "=", m.id)
        .where("version", "=", m.version)
        .execute();
      await tx.insertInto("release_indexes").values(indexes.map(releaseIndexToRow)).execute();
      await tx
        .insertInto("audit")
        .values(auditToRow(at, actor, "indexes", { id: m.id, version: m.version, signedBy: indexes[0]?.signingKey ?? null }))
        .execute();
      return true;
    });
  }

  async release(image: string, version: string): Promise<RecordedManifest | undefined> {
    return this.publishedIn(this.kysely, image, version);
  }

  async releases(image?: string): Promise<PublishedRelease[]> {
    let q = this.kysely
      .selectFrom("releases as r")
      .leftJoin("release_indexes as i", (j) => j.onRef("i.image", "=", "r.image").onRef("i.version", "=", "r.version").on("i.offers", "=", "release"))
      .select(["r.image", "r.version", "r.manifest", "r.committed_at", "i.signing_key"])
      .orderBy("r.committed_at");
    if (image) q = q.where("r.image", "=", image);
    return (await q.execute()).map((r) => ({ ...releaseFromRow(r), committedAt: r.committed_at, signedBy: r.signing_key }));
  }

  async releaseFile(image: string, name: string): Promise<{ version: string; kind: string; size: number; sha256: string } | undefined> {
    return this.kysely
      .selectFrom("release_files")
      .select(["version", "kind", "size", "sha256"])
      .where("image", "=", image)
      .where("name", "=", name)
      .executeTakeFirst();
  }

  /** Every upload in progress. */
  async uploads(): Promise<Upload[]> {
    return (await this.kysely.selectFrom("uploads").selectAll().orderBy("started_at").execute()).map(uploadFromRow);
  }

  /** Clears the token of an upload that is still at `token` (before its files move in the store); false when it is not. */
  async suspendUpload(image: string, version: string, token: string): Promise<boolean> {
    return this.transaction(async (tx) => {
      await this.lockReleases(tx);
      const r = await tx
        .updateTable("uploads")
        .set({ token: null })
        .where("image", "=", image)
        .where("version", "=", version)
        .where("token", "=", token)
        .executeTakeFirstOrThrow();
      return r.numUpdatedRows === 1n;
    });
  }

  /** Gives an upload a new token once the store holds only its own files; undefined when the upload is gone. */
  async resumeUpload(image: string, version: string): Promise<string | undefined> {
    const token = randomBytes(16).toString("hex");
    return this.transaction(async (tx) => {
      await this.lockReleases(tx);
      const r = await tx.updateTable("uploads").set({ token }).where("image", "=", image).where("version", "=", version).executeTakeFirstOrThrow();
      return r.numUpdatedRows === 1n ? token : undefined;
    });
  }

  /**
   * Release transactions take turns on PostgreSQL, as they do on SQLite (BEGIN IMMEDIATE): a begin
   * and a commit of the same version must not both read "not published" and then both act.
   */
  private async lockReleases(tx: Tx): Promise<void> {
    if (this.engine === "postgres") await sql`SELECT pg_advisory_xact_lock(${sql.lit(RELEASES_LOCK)})`.execute(tx);
  }

  private async publishedIn(db: Kysely<Database>, image: string, version: string): Promise<RecordedManifest | undefined> {
    const r = await db
      .selectFrom("releases")
      .select(["image", "version", "manifest"])
      .where("image", "=", image)
      .where("version", "=", version)
      .executeTakeFirst();
    return r ? releaseFromRow(r) : undefined;
  }

  /** The first file name of `m` that another version's release has. */
  private async takenIn(tx: Tx, m: RecordedManifest): Promise<NameTaken | undefined> {
    const names = m.files.map((f) => f.name);
    if (!names.length) return undefined;
    const r = await tx
      .selectFrom("release_files")
      .select(["name", "version"])
      .where("image", "=", m.id)
      .where("version", "<>", m.version)
      .where("name", "in", names)
      .orderBy("name")
      .limit(1)
      .executeTakeFirst();
    return r ? { status: "taken", name: r.name, version: r.version, committed: true } : undefined;
  }

  // Signed indexes --------------------------------------------------------------------------

  /** One of a release's signed indexes; undefined for a release recorded without them. */
  async releaseIndex(image: string, version: string, offers: IndexOffers): Promise<SignedIndex | undefined> {
    const r = await this.kysely
      .selectFrom("release_indexes")
      .selectAll()
      .where("image", "=", image)
      .where("version", "=", version)
      .where("offers", "=", offers)
      .executeTakeFirst();
    return r ? releaseIndexFromRow(r) : undefined;
  }

  /** The signed index with this id (the one a device's held view names). */
  async indexById(image: string, id: string): Promise<SignedIndex | undefined> {
    const r = await this.kysely.selectFrom("release_indexes").selectAll().where("image", "=", image).where("id", "=", id).limit(1).executeTakeFirst();
    return r ? releaseIndexFromRow(r) : undefined;
  }

  /** The index that offers nothing of the image's newest committed release that has one: what a device with nothing to do is shown. */
  async newestEmptyIndex(image: string): Promise<SignedIndex | undefined> {
    const r = await this.kysely
      .selectFrom("release_indexes as i")
      .innerJoin("releases as r", (j) => j.onRef("r.image", "=", "i.image").onRef("r.version", "=", "i.version"))
      .selectAll("i")
      .where("i.image", "=", image)
      .where("i.offers", "=", "nothing")
      .orderBy("r.committed_at", "desc")
      .orderBy("r.version", "desc")
      .limit(1)
      .executeTakeFirst();
    return r ? releaseIndexFromRow(r) : undefined;
  }

  // Channels and rollouts -------------------------------------------------------------------

  async channel(image: string, channel: string): Promise<ChannelRecord | undefined> {
    const c = await this.kysely.selectFrom("channels").selectAll().where("image", "=", image).where("channel", "=", channel).executeTakeFirst();
    if (!c) return undefined;
    const rollouts = await this.kysely
      .selectFrom("rollouts")
      .selectAll()
      .where("image", "=", image)
      .where("channel", "=", channel)
      .orderBy("added_at")
      .execute();
    return channelFromRow(c, rollouts.map(rolloutFromRow));
  }

  async channels(): Promise<ChannelRecord[]> {
    const cs = await this.kysely.selectFrom("channels").selectAll().orderBy("image").orderBy("channel").execute();
    const rs = (await this.kysely.selectFrom("rollouts").selectAll().orderBy("added_at").execute()).map(rolloutFromRow);
    return cs.map((c) =>
      channelFromRow(
        c,
        rs.filter((r) => r.image === c.image && r.channel === c.channel),
      ),
    );
  }

  /**
   * Offers a release on a channel in one transaction: the channel and the promoted release's rollout
   * (with a history entry), so a device sees either the old state or the new one.
   */
  async saveChannel(c: Omit<ChannelRecord, "rollouts">, promoted: Rollout, actor: string): Promise<void> {
    await this.transaction(async (tx) => {
      const channel = channelToRow(c);
      await tx
        .insertInto("channels")
        .values(channel)
        .onConflict((oc) => oc.columns(["image", "channel"]).doUpdateSet({ updated_at: channel.updated_at }))
        .execute();
      await tx
        .insertInto("rollouts")
        .values(rolloutToRow(promoted))
        .onConflict((oc) => oc.columns(["image", "channel", "version"]).doUpdateSet(rolloutValues(promoted)))
        .execute();
      await this.recordChange(tx, promoted, actor, "offered on the channel");
    });
  }

  private async recordChange(tx: Tx, r: Rollout, actor: string, reason: string | null): Promise<void> {
    await tx
      .insertInto("rollout_changes")
      .values(rolloutChangeToRow(r, actor, reason))
      .execute();
  }

  /**
   * Changes one rollout if it is still as the caller read it (`updatedAt`): replicas that run the
   * same scheduled step or automatic pause at once apply it once. True when this call applied it.
   */
  async updateRollout(prev: Rollout, next: Rollout, actor: string, reason: string | null): Promise<boolean> {
    return this.transaction(async (tx) => {
      const r = await tx
        .updateTable("rollouts")
        .set(rolloutValues(next))
        .where("image", "=", prev.image)
        .where("channel", "=", prev.channel)
        .where("version", "=", prev.version)
        .where("updated_at", "=", prev.updatedAt)
        .executeTakeFirstOrThrow();
      if (r.numUpdatedRows !== 1n) return false;
      await this.recordChange(tx, next, actor, reason);
      return true;
    });
  }

  async rollouts(): Promise<Rollout[]> {
    return (await this.kysely.selectFrom("rollouts").selectAll().orderBy("image").orderBy("channel").orderBy("added_at").execute()).map(rolloutFromRow);
  }

  async rolloutChanges(image: string, channel: string, version: string): Promise<RolloutChange[]> {
    const rows = await this.kysely
      .selectFrom("rollout_changes")
      .select(["at", "percent", "paused", "actor", "reason"])
      .where("image", "=", image)
      .where("channel", "=", channel)
      .where("version", "=", version)
      .orderBy("at")
      .orderBy("seq")
      .execute();
    return rows.map(rolloutChangeFromRow);
  }

  // Pins ------------------------------------------------------------------------------------

  async setPin(p: Pin): Promise<void> {
    const row = pinToRow(p);
    await this.kysely
      .insertInto("pins")
      .values(row)
      .onConflict((oc) => oc.columns(["image", "scope", "target"]).doUpdateSet({ version: row.version, actor: row.actor, at: row.at }))
      .execute();
  }

  async deletePin(image: string, scope: Pin["scope"], target: string): Promise<boolean> {
    const r = await this.kysely.deleteFrom("pins").where("image", "=", image).where("scope", "=", scope).where("target", "=", target).executeTakeFirstOrThrow();
    return r.numDeletedRows > 0n;
  }

  async pins(image?: string): Promise<Pin[]> {
    let q = this.kysely.selectFrom("pins").selectAll().orderBy("image").orderBy("scope").orderBy("target");
    if (image) q = q.where("image", "=", image);
    return (await q.execute()).map(pinFromRow);
  }

  /** The pins that may apply to a device: its own, and every group's (which group it is in is the caller's to read). */
  async pinsFor(image: string, machine: string): Promise<Pin[]> {
    const rows = await this.kysely
      .selectFrom("pins")
      .selectAll()
      .where("image", "=", image)
      .where((eb) => eb.or([eb("scope", "=", "group"), eb.and([eb("scope", "=", "device"), eb("target", "=", machine)])]))
      .execute();
    return rows.map(pinFromRow);
  }

  // Devices ---------------------------------------------------------------------------------

  /** Just the signed index a device is held on, and for which boot: the cheap read of every index request. */
  async heldView(image: string, machine: string): Promise<HeldView | undefined> {
    const r = await this.kysely.selectFrom("devices").select(HELD_VIEW_COLUMNS).where("image", "=", image).where("machine", "=", machine).executeTakeFirst();
    return r ? heldViewFromRow(r) : undefined;
  }

  async device(image: string, machine: string): Promise<Device | undefined> {
    const r = await this.kysely.selectFrom("devices").selectAll().where("image", "=", image).where("machine", "=", machine).executeTakeFirst();
    return r ? deviceFromRow(r) : undefined;
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
    return this.transaction(async (tx) => {
      const current = async () => {
        const row = await this.lockForUpdate(tx.selectFrom("devices").selectAll().where("image", "=", image).where("machine", "=", machine)).executeTakeFirst();
        return row ? deviceFromRow(row) : undefined;
      };
      const update = (d: Device) => tx.updateTable("devices").set(deviceValues(d)).where("image", "=", image).where("machine", "=", machine).execute();
      const prev = await current();
      let out = change(prev);
      if (!out) return undefined;
      if (prev) await update(out.device);
      else {
        // The row lock guards only a row that exists. Of two first sightings at once, one inserts;
        // the other's insert waits for it to commit, finds the row, and applies its change to it.
        const inserted = await tx
          .insertInto("devices")
          .values(deviceToRow(out.device))
          .onConflict((oc) => oc.columns(["image", "machine"]).doNothing())
          .executeTakeFirst();
        if (Number(inserted.numInsertedOrUpdatedRows ?? 0) === 0) {
          out = change(await current());
          if (!out) return undefined;
          await update(out.device);
        }
      }
      if (out.events.length)
        await tx
          .insertInto("device_events")
          .values(out.events.map((e) => eventToRow(image, machine, e)))
          .execute();
      return out;
    });
  }

  async setGroup(image: string, machines: string[], group: string | null): Promise<number> {
    return this.transaction(async (tx) => {
      let changed = 0;
      for (const m of machines) {
        const r = await tx.updateTable("devices").set({ grp: group }).where("image", "=", image).where("machine", "=", m).executeTakeFirstOrThrow();
        changed += Number(r.numUpdatedRows);
      }
      return changed;
    });
  }

  private deviceWhere(f: DeviceFilter) {
    return (eb: ExpressionBuilder<Database, "devices">) => {
      const parts: Expression<SqlBool>[] = [];
      if (f.image) parts.push(eb("image", "=", f.image));
      if (f.version) parts.push(eb("booted_version", "=", f.version));
      if (f.channel) parts.push(eb("channel", "=", f.channel));
      if (f.group) parts.push(eb("grp", "=", f.group));
      if (f.health === "healthy") parts.push(eb("healthy", "=", 1));
      if (f.health === "unhealthy") parts.push(eb("healthy", "=", 0));
      if (f.health === "unknown") parts.push(eb("healthy", "is", null));
      if (f.duplicate !== undefined) parts.push(eb("duplicate", "=", f.duplicate ? 1 : 0));
      if (f.rolledBack !== undefined) parts.push(eb("rolled_back", f.rolledBack ? "<>" : "=", "[]"));
      // Only hexadecimal digits are kept: no LIKE wildcards get through.
      if (f.search) parts.push(eb("machine", "like", `%${f.search.toLowerCase().replace(/[^0-9a-f]/g, "")}%`));
      return eb.and(parts);
    };
  }

  async devices(f: DeviceFilter = {}): Promise<{ total: number; devices: Device[] }> {
    const where = this.deviceWhere(f);
    const count = await this.kysely
      .selectFrom("devices")
      .select((eb) => eb.fn.countAll<number>().as("c"))
      .where(where)
      .executeTakeFirst();
    const rows = await this.kysely
      .selectFrom("devices")
      .selectAll()
      .where(where)
      .orderBy("last_seen", "desc")
      .orderBy("machine")
      .limit(Math.min(f.limit ?? 100, 1000))
      .offset(f.offset ?? 0)
      .execute();
    return { total: Number(count?.c ?? 0), devices: rows.map(deviceFromRow) };
  }

  async events(filter: { image: string; machine?: string; version?: string; kinds?: EventKind[]; limit?: number; afterSeq?: number }): Promise<StoredEvent[]> {
    let q = this.kysely.selectFrom("device_events").selectAll().where("image", "=", filter.image);
    if (filter.machine) q = q.where("machine", "=", filter.machine);
    if (filter.version) q = q.where("version", "=", filter.version);
    if (filter.kinds?.length) q = q.where("kind", "in", filter.kinds);
    if (filter.afterSeq !== undefined) q = q.where("seq", ">", filter.afterSeq);
    const rows = await q
      .orderBy("seq", filter.machine ? "desc" : "asc")
      .limit(filter.limit ?? 1000)
      .execute();
    return rows.map(eventFromRow);
  }

  /** For each device, when it first did each of `kinds` for `version`: the points of a progress chart. */
  async firstEvents(image: string, version: string, kinds: EventKind[]): Promise<{ kind: string; machine: string; at: number }[]> {
    if (!kinds.length) return [];
    const rows = await this.kysely
      .selectFrom("device_events")
      .select((eb) => ["kind", "machine", eb.fn.min("at").as("at")])
      .where("image", "=", image)
      .where("version", "=", version)
      .where("kind", "in", kinds)
      .groupBy(["kind", "machine"])
      .orderBy("at")
      .execute();
    return rows.map((r) => ({ kind: r.kind, machine: r.machine, at: Number(r.at) }));
  }

  async releaseStats(image: string, version: string): Promise<ReleaseStats> {
    // One pass over the release's evidence: per device, whether it took the release and how it failed.
    const rows = await this.kysely
      .selectFrom("device_events")
      .select((eb) => {
        const any = (kinds: EventKind[]) => eb.fn.max(eb.case().when("kind", "in", kinds).then(eb.lit(1)).else(eb.lit(0)).end());
        return ["machine", any(["downloaded", "booted", "report"]).as("took"), any(["rollback"]).as("rolled_back"), any(["unhealthy"]).as("unhealthy")];
      })
      .where("image", "=", image)
      .where("version", "=", version)
      .where("evidence", "=", 1)
      .where("kind", "in", ["downloaded", "booted", "report", "rollback", "unhealthy"])
      .groupBy("machine")
      .execute();
    const adopters = rows.filter((r) => Number(r.took) === 1);
    const running = await this.kysely
      .selectFrom("devices")
      .select((eb) => eb.fn.countAll<number>().as("c"))
      .where("image", "=", image)
      .where("booted_version", "=", version)
      .executeTakeFirst();
    return {
      adopters: adopters.length,
      running: Number(running?.c ?? 0),
      rolledBack: adopters.filter((r) => Number(r.rolled_back) === 1).length,
      unhealthy: adopters.filter((r) => Number(r.unhealthy) === 1).length,
      failures: adopters.filter((r) => Number(r.rolled_back) === 1 || Number(r.unhealthy) === 1).length,
    };
  }

  /** Devices per booted version, with how many of them are unhealthy: the fleet at a glance. */
  async versionCounts(image?: string): Promise<{ image: string; version: string | null; devices: number; unhealthy: number; duplicate: number }[]> {
    let q = this.kysely
      .selectFrom("devices")
      .select((eb) => [
        "image",
        "booted_version",
        eb.fn.countAll<number>().as("c"),
        eb.fn.sum<number | null>(eb.case().when("healthy", "=", 0).then(eb.lit(1)).else(eb.lit(0)).end()).as("u"),
        eb.fn.sum<number | null>("duplicate").as("d"),
      ])
      .groupBy(["image", "booted_version"])
      .orderBy("image")
      .orderBy("booted_version");
    if (image) q = q.where("image", "=", image);
    return (await q.execute()).map((r) => ({
      image: r.image,
      version: r.booted_version,
      devices: Number(r.c),
      unhealthy: Number(r.u ?? 0),
      duplicate: Number(r.d ?? 0),
    }));
  }

  async eventCounts(): Promise<{ image: string; version: string | null; kind: string; count: number }[]> {
    const rows = await this.kysely
      .selectFrom("device_events")
      .select((eb) => ["image", "version", "kind", eb.fn.countAll<number>().as("c")])
      .where("kind", "in", ["rollback", "unhealthy", "report", "downloaded"])
      .groupBy(["image", "version", "kind"])
      .execute();
    return rows.map((r) => ({ image: r.image, version: r.version, kind: r.kind, count: Number(r.c) }));
  }

  // Sessions --------------------------------------------------------------------------------

  async putSession(x: SessionRecord): Promise<void> {
    await this.kysely.insertInto("sessions").values(sessionToRow(x)).execute();
  }

  async session(idHash: string): Promise<SessionRecord | undefined> {
    const r = await this.kysely.selectFrom("sessions").selectAll().where("id_hash", "=", idHash).executeTakeFirst();
    return r ? sessionFromRow(r) : undefined;
  }

  async deleteSession(idHash: string): Promise<boolean> {
    return (await this.kysely.deleteFrom("sessions").where("id_hash", "=", idHash).executeTakeFirstOrThrow()).numDeletedRows > 0n;
  }

  /** Ends every session of `operator`: "sign out everywhere". */
  async deleteSessions(operator: string): Promise<number> {
    return Number((await this.kysely.deleteFrom("sessions").where("operator", "=", operator).executeTakeFirstOrThrow()).numDeletedRows);
  }

  async deleteExpiredSessions(now: number): Promise<number> {
    return Number((await this.kysely.deleteFrom("sessions").where("expires_at", "<=", now).executeTakeFirstOrThrow()).numDeletedRows);
  }

  // Audit -----------------------------------------------------------------------------------

  async audit(at: number, actor: string, action: string, detail: Record<string, unknown>): Promise<void> {
    await this.kysely
      .insertInto("audit")
      .values(auditToRow(at, actor, action, detail))
      .execute();
  }

  async auditLog(limit = 100): Promise<AuditEntry[]> {
    return (await this.kysely.selectFrom("audit").selectAll().orderBy("seq", "desc").limit(limit).execute()).map(auditFromRow);
  }
}
