// Versioned schema migrations, applied in order at start-up and recorded in schema_migrations.
// A migration is never edited once released: a change is a new entry at the end. Each is plain DDL
// (no values) for the engine at hand, run through Kysely's raw SQL; tables.ts describes the result.
import { type Kysely, sql } from "kysely";
import { type Engine, engineOf } from "./sql.js";
import type { Database } from "./tables.js";

interface Migration {
  version: number;
  name: string;
  sql: (d: Engine) => string[];
}

const serial = (d: Engine) => (d === "postgres" ? "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT");
const blob = (d: Engine) => (d === "postgres" ? "BYTEA" : "BLOB");

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: "releases, channels, rollouts, pins, devices and events",
    sql: (d) => [
      `CREATE TABLE releases (
        image TEXT NOT NULL, version TEXT NOT NULL, manifest TEXT NOT NULL, committed_at BIGINT NOT NULL,
        PRIMARY KEY (image, version))`,
      `CREATE TABLE release_files (
        image TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL,
        size BIGINT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (image, name))`,
      `CREATE TABLE uploads (
        image TEXT NOT NULL, version TEXT NOT NULL, manifest TEXT NOT NULL, started_at BIGINT NOT NULL,
        PRIMARY KEY (image, version))`,
      `CREATE TABLE snapshots (
        image TEXT NOT NULL, hash TEXT NOT NULL, versions TEXT NOT NULL, index_data ${blob(d)} NOT NULL,
        signature ${blob(d)} NOT NULL, armored TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (image, hash))`,
      `CREATE TABLE channels (
        image TEXT NOT NULL, channel TEXT NOT NULL, empty_snapshot TEXT NOT NULL, updated_at BIGINT NOT NULL,
        PRIMARY KEY (image, channel))`,
      `CREATE TABLE rollouts (
        image TEXT NOT NULL, channel TEXT NOT NULL, version TEXT NOT NULL, added_at BIGINT NOT NULL,
        snapshot TEXT NOT NULL, percent DOUBLE PRECISION NOT NULL, paused INTEGER NOT NULL DEFAULT 0, pause_reason TEXT,
        steps TEXT, step_seconds BIGINT, next_step_at BIGINT,
        max_failure_rate DOUBLE PRECISION NOT NULL, min_devices INTEGER NOT NULL, updated_at BIGINT NOT NULL,
        PRIMARY KEY (image, channel, version))`,
      `CREATE TABLE rollout_changes (
        seq ${serial(d)}, image TEXT NOT NULL, channel TEXT NOT NULL, version TEXT NOT NULL, at BIGINT NOT NULL,
        percent DOUBLE PRECISION NOT NULL, paused INTEGER NOT NULL, actor TEXT NOT NULL, reason TEXT)`,
      "CREATE INDEX rollout_changes_release ON rollout_changes (image, channel, version, at)",
      `CREATE TABLE pins (
        image TEXT NOT NULL, scope TEXT NOT NULL, target TEXT NOT NULL, version TEXT NOT NULL, snapshot TEXT NOT NULL,
        actor TEXT NOT NULL, at BIGINT NOT NULL, PRIMARY KEY (image, scope, target))`,
      `CREATE TABLE devices (
        image TEXT NOT NULL, machine TEXT NOT NULL, arch TEXT NOT NULL, channel TEXT NOT NULL, grp TEXT,
        first_seen BIGINT NOT NULL, last_seen BIGINT NOT NULL,
        booted_version TEXT, boot_id TEXT, prev_boot_id TEXT, boot_seen_at BIGINT, reboots INTEGER NOT NULL DEFAULT 0,
        view_snapshot TEXT, view_until BIGINT,
        downloaded_version TEXT, downloaded_at BIGINT, rolled_back TEXT NOT NULL DEFAULT '[]',
        duplicate INTEGER NOT NULL DEFAULT 0, healthy INTEGER, report TEXT, report_at BIGINT,
        PRIMARY KEY (image, machine))`,
      "CREATE INDEX devices_version ON devices (image, booted_version)",
      "CREATE INDEX devices_last_seen ON devices (image, last_seen)",
      `CREATE TABLE device_events (
        seq ${serial(d)}, image TEXT NOT NULL, machine TEXT NOT NULL, at BIGINT NOT NULL, kind TEXT NOT NULL,
        version TEXT, detail TEXT)`,
      "CREATE INDEX device_events_release ON device_events (image, version, kind)",
      "CREATE INDEX device_events_device ON device_events (image, machine, seq)",
      `CREATE TABLE audit (seq ${serial(d)}, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)`,
    ],
  },
  {
    version: 2,
    name: "dashboard sessions on the server; which device events are evidence for a rollout's health",
    sql: () => [
      // The id is stored hashed: a copy of the database does not sign anyone in.
      `CREATE TABLE sessions (
        id_hash TEXT NOT NULL PRIMARY KEY, operator TEXT NOT NULL, credential TEXT NOT NULL,
        created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, peer TEXT NOT NULL)`,
      "CREATE INDEX sessions_operator ON sessions (operator)",
      "ALTER TABLE device_events ADD COLUMN evidence INTEGER NOT NULL DEFAULT 0",
      "ALTER TABLE devices ADD COLUMN downloaded_evidence INTEGER NOT NULL DEFAULT 0",
      "CREATE INDEX device_events_evidence ON device_events (image, version, evidence, kind, machine)",
    ],
  },
  {
    version: 3,
    name: "which attempt at an upload a commit may record (uploads.token)",
    // NULL while a begin or an undone commit changes the upload's files in the store; uploads begun
    // before this migration keep a token ('') and can still be committed.
    sql: () => ["ALTER TABLE uploads ADD COLUMN token TEXT DEFAULT ''"],
  },
  {
    version: 4,
    name: "the server signs nothing: each release's pre-signed indexes instead of snapshots signed on the server",
    // A release recorded before keeps no indexes and cannot be offered until it is published again
    // with them; the snapshots the server signed go, and with them what named them, devices' held
    // views included (a device's next check chooses again).
    sql: (d) => [
      `CREATE TABLE release_indexes (
        image TEXT NOT NULL, version TEXT NOT NULL, offers TEXT NOT NULL, id TEXT NOT NULL,
        index_data ${blob(d)} NOT NULL, signature ${blob(d)} NOT NULL, armored TEXT NOT NULL, signing_key TEXT NOT NULL,
        PRIMARY KEY (image, version, offers))`,
      "CREATE INDEX release_indexes_id ON release_indexes (image, id)",
      "DROP TABLE snapshots",
      "ALTER TABLE channels DROP COLUMN empty_snapshot",
      "ALTER TABLE rollouts DROP COLUMN snapshot",
      "ALTER TABLE pins DROP COLUMN snapshot",
      "ALTER TABLE devices DROP COLUMN view_snapshot",
      "ALTER TABLE devices ADD COLUMN view_index TEXT",
    ],
  },
];

/** Replicas starting at once take turns on this PostgreSQL advisory lock (held until the migration's transaction ends). */
const MIGRATION_LOCK = 4242001;

/** Brings the schema up to date in one transaction and returns the versions it applied. */
export async function migrate(db: Kysely<Database>): Promise<number[]> {
  const engine = engineOf(db);
  return db.transaction().execute(async (tx) => {
    if (engine === "postgres") await sql`SELECT pg_advisory_xact_lock(${sql.lit(MIGRATION_LOCK)})`.execute(tx);
    await sql`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`.execute(tx);
    const done = new Set((await tx.selectFrom("schema_migrations").select("version").execute()).map((r) => Number(r.version)));
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      for (const statement of m.sql(engine)) await sql.raw(statement).execute(tx);
      await tx.insertInto("schema_migrations").values({ version: m.version, name: m.name, applied_at: Date.now() }).execute();
      applied.push(m.version);
    }
    return applied;
  });
}

export const SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));
