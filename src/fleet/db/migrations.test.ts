// Schema migrations on both engines: applied once, recorded, safe when replicas start together, and
// an existing database at an older version upgrades in place with its data.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Kysely, sql } from "kysely";
import { describe, expect, it } from "vitest";
import { databaseEngines, type Engine } from "../../../tests/support/database-engines.js";
import { standInRelease } from "../../../tests/support/fleet-server.js";
import type { RecordedManifest, ReleaseManifest } from "../../contract/release-manifest.js";
import type { DeviceReport } from "../../contract/report.js";
import { UserError } from "../../errors.js";
import { openFleet } from "../../server/server.js";
import { FleetDb } from "./fleet-db.js";
import { MIGRATIONS, migrate, SCHEMA_VERSION } from "./migrations.js";
import { openSql } from "./sql.js";

const { engines, fresh } = databaseEngines("migrations");

/**
 * The rows a server that signed indexes itself kept for demo 1.0 on stable: the snapshot it signed,
 * the channel naming its empty one, and the rollout (paused at 10 % on a schedule, unless `rollout` says otherwise).
 */
function oldChannelRows(rollout: Record<string, unknown> = {}): [string, Record<string, unknown>][] {
  return [
    [
      "snapshots",
      {
        image: "demo",
        hash: "h1",
        versions: '["1.0"]',
        index_data: Buffer.from("index\n"),
        signature: Buffer.from([0, 1, 2, 255]),
        armored: "-----BEGIN PGP SIGNATURE-----",
        created_at: 1500,
      },
    ],
    ["channels", { image: "demo", channel: "stable", empty_snapshot: "h0", updated_at: 1500 }],
    [
      "rollouts",
      {
        image: "demo",
        channel: "stable",
        version: "1.0",
        added_at: 1500,
        snapshot: "h1",
        percent: 10,
        paused: 1,
        pause_reason: "too many failures",
        steps: "[10,50,100]",
        step_seconds: 3600,
        next_step_at: 5100,
        max_failure_rate: 0.2,
        min_devices: 3,
        updated_at: 1600,
        ...rollout,
      },
    ],
  ];
}

/** A manifest as Basalt wrote it before releases carried their signed indexes (format 1). */
function formatOne(m: ReleaseManifest): RecordedManifest {
  const { publicKey: _key, indexes: _indexes, ...rest } = m;
  return { ...rest, format: 1 };
}

/** The statements of a frozen schema file (fixtures/: `NAME.ENGINE.sql`, or `NAME.sql` for both engines), comments left out. */
function statements(engine: Engine, name: string): string[] {
  const own = join(import.meta.dirname, "fixtures", `${name}.${engine}.sql`);
  const text = readFileSync(existsSync(own) ? own : join(import.meta.dirname, "fixtures", `${name}.sql`), "utf8");
  return text
    .split("\n")
    .filter((l) => !l.startsWith("--"))
    .join("\n")
    .split(/;\s*\n/)
    .map((s) => s.trim())
    .filter(Boolean);
}

describe.each(engines)("migrations on %s", (backend) => {
  const url = async () => (await fresh(backend)) ?? join(mkdtempSync(join(tmpdir(), "basalt-mig-")), "fleet.db");

  it("applies every migration once and records it", async () => {
    const target = await url();
    const db = await openSql(target);
    expect(await migrate(db)).toEqual(MIGRATIONS.map((m) => m.version));
    expect(await migrate(db)).toEqual([]);
    const rows = await db.selectFrom("schema_migrations").select(["version", "name"]).orderBy("version").execute();
    expect(rows.map((r) => Number(r.version))).toEqual(MIGRATIONS.map((m) => m.version));
    expect(rows.map((r) => r.name)).toEqual(MIGRATIONS.map((m) => m.name));
    expect(Math.max(...rows.map((r) => Number(r.version)))).toBe(SCHEMA_VERSION);
    await db.destroy();
  });

  // Replicas share PostgreSQL; SQLite serves one server (and its connections in one process would
  // wait for each other synchronously, which says nothing about separate servers).
  it.runIf(backend === "postgres")("lets replicas that start at the same moment migrate one after the other", async () => {
    const target = await url();
    const replicas = await Promise.all([openSql(target), openSql(target), openSql(target)]);
    const applied = await Promise.all(replicas.map((r) => migrate(r)));
    expect(applied.flat().sort()).toEqual(MIGRATIONS.map((m) => m.version).sort());
    for (const r of replicas) await r.destroy();
  });

  it("upgrades a database at version 1, made by the migrations before Kysely, in place with its data", async () => {
    const target = await url();
    const v1 = formatOne((await standInRelease("demo", "1.0")).manifest);
    const v2 = formatOne((await standInRelease("demo", "2.0")).manifest);
    const machine = "ab".repeat(16);
    const report: DeviceReport = {
      event: "boot",
      version: "1.0",
      boot_id: "cd".repeat(16),
      blessed: "good",
      healthy: true,
      failed_units: [],
      uptime_seconds: 42,
      entries: ["demo_1.0.efi"],
    };
    // The old database: the schema as it was, and rows as the code of its time wrote them.
    const old = await openSql(target);
    for (const s of statements(backend, "schema-v1")) await sql.raw(s).execute(old);
    // Untyped: these are the tables of version 1, not of `Database`.
    const legacy = old as unknown as Kysely<Record<string, Record<string, unknown>>>;
    const rows: [string, Record<string, unknown>][] = [
      ["releases", { image: "demo", version: "1.0", manifest: JSON.stringify(v1), committed_at: 1000 }],
      ...v1.files.map((f): [string, Record<string, unknown>] => [
        "release_files",
        { image: "demo", name: f.name, version: "1.0", kind: f.kind, size: f.size, sha256: f.sha256 },
      ]),
      ["uploads", { image: "demo", version: "2.0", manifest: JSON.stringify(v2), started_at: 2000 }],
      ...oldChannelRows(),
      [
        "rollout_changes",
        { image: "demo", channel: "stable", version: "1.0", at: 1500, percent: 10, paused: 0, actor: "alice", reason: "offered on the channel" },
      ],
      ["pins", { image: "demo", scope: "device", target: machine, version: "1.0", snapshot: "h1", actor: "bob", at: 1700 }],
      [
        "devices",
        {
          image: "demo",
          machine,
          arch: "x86-64",
          channel: "stable",
          grp: "lab",
          first_seen: 1100,
          last_seen: 1800,
          booted_version: "1.0",
          boot_id: report.boot_id,
          reboots: 2,
          rolled_back: '["0.9"]',
          duplicate: 0,
          healthy: 1,
          report: JSON.stringify(report),
          report_at: 1800,
        },
      ],
      ["device_events", { image: "demo", machine, at: 1800, kind: "rollback", version: "0.9", detail: '{"running":"1.0"}' }],
      ["audit", { at: 1000, actor: "alice", action: "commit", detail: '{"id":"demo","version":"1.0","files":2}' }],
    ];
    for (const [table, row] of rows) await legacy.insertInto(table).values(row).execute();
    await old.destroy();

    const db = await FleetDb.open(target);
    const versions = await db.kysely.selectFrom("schema_migrations").select("version").orderBy("version").execute();
    expect(versions.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    expect(await db.release("demo", "1.0")).toEqual(v1);
    expect(await db.releaseFile("demo", `demo_1.0.efi`)).toMatchObject({ version: "1.0", kind: "uki" });
    // Migration 3: an upload begun before it can still be committed, with the token '' it was given.
    expect(await db.uploads()).toEqual([{ manifest: v2, token: "" }]);
    // Migration 4: the snapshots the server signed are gone, and what named them.
    expect(await db.indexById("demo", "h1")).toBeUndefined();
    expect(await db.releaseIndex("demo", "1.0", "release")).toBeUndefined();
    expect(await db.channel("demo", "stable")).toEqual({
      image: "demo",
      channel: "stable",
      updatedAt: 1500,
      rollouts: [
        {
          image: "demo",
          channel: "stable",
          version: "1.0",
          addedAt: 1500,
          percent: 10,
          paused: true,
          pauseReason: "too many failures",
          steps: [10, 50, 100],
          stepSeconds: 3600,
          nextStepAt: 5100,
          maxFailureRate: 0.2,
          minDevices: 3,
          updatedAt: 1600,
        },
      ],
    });
    expect(await db.rolloutChanges("demo", "stable", "1.0")).toEqual([
      { at: 1500, percent: 10, paused: false, actor: "alice", reason: "offered on the channel" },
    ]);
    expect(await db.pins("demo")).toEqual([{ image: "demo", scope: "device", target: machine, version: "1.0", actor: "bob", at: 1700 }]);
    expect(await db.device("demo", machine)).toEqual({
      image: "demo",
      machine,
      arch: "x86-64",
      channel: "stable",
      group: "lab",
      firstSeen: 1100,
      lastSeen: 1800,
      bootedVersion: "1.0",
      bootId: report.boot_id,
      prevBootId: null,
      bootSeenAt: null,
      reboots: 2,
      viewIndex: null,
      viewUntil: null,
      downloadedVersion: null,
      downloadedAt: null,
      // Migration 2: downloads recorded before it are not evidence.
      downloadedEvidence: false,
      rolledBack: ["0.9"],
      duplicate: false,
      healthy: true,
      report,
      reportAt: 1800,
    });
    expect(await db.events({ image: "demo", machine })).toEqual([
      { seq: 1, image: "demo", machine, at: 1800, kind: "rollback", version: "0.9", evidence: false, detail: { running: "1.0" } },
    ]);
    expect(await db.auditLog()).toEqual([{ seq: 1, at: 1000, actor: "alice", action: "commit", detail: { id: "demo", version: "1.0", files: 2 } }]);
    // And it goes on from there: the old upload commits, new rows take the next sequence numbers.
    expect(await db.commitRelease(v2, [], "", 3000, "carol")).toEqual({ status: "committed" });
    expect((await db.releases("demo")).map((r) => [r.version, r.committedAt])).toEqual([
      ["1.0", 1000],
      ["2.0", 3000],
    ]);
    expect((await db.auditLog()).map((e) => [e.seq, e.actor])).toEqual([
      [2, "carol"],
      [1, "alice"],
    ]);
    await db.close();
    // Opened again: nothing left to apply.
    const again = await openSql(target);
    expect(await migrate(again)).toEqual([]);
    await again.destroy();
  });

  it("upgrades a database at version 3, whose releases the server signed snapshots for: they cannot be offered until published again with their indexes", async () => {
    const target = await url();
    const data = mkdtempSync(join(tmpdir(), "basalt-mig-data-"));
    const v1 = await standInRelease("demo", "1.0");
    const v2 = await standInRelease("demo", "2.0");
    const machine = "ab".repeat(16);
    const old = await openSql(target);
    for (const s of [...statements(backend, "schema-v1"), ...statements(backend, "schema-v3-from-v1")]) await sql.raw(s).execute(old);
    const legacy = old as unknown as Kysely<Record<string, Record<string, unknown>>>;
    const rows: [string, Record<string, unknown>][] = [
      ["releases", { image: "demo", version: "1.0", manifest: JSON.stringify(formatOne(v1.manifest)), committed_at: 1000 }],
      ...v1.manifest.files.map((f): [string, Record<string, unknown>] => [
        "release_files",
        { image: "demo", name: f.name, version: "1.0", kind: f.kind, size: f.size, sha256: f.sha256 },
      ]),
      // An upload the old server began: its commit must not record a release without indexes.
      ["uploads", { image: "demo", version: "2.0", manifest: JSON.stringify(formatOne(v2.manifest)), started_at: 2000, token: "t0" }],
      ...oldChannelRows({ percent: 100, paused: 0, pause_reason: null, steps: null, step_seconds: null, next_step_at: null }),
      ["pins", { image: "demo", scope: "group", target: "lab", version: "1.0", snapshot: "h1", actor: "bob", at: 1700 }],
      [
        "devices",
        {
          image: "demo",
          machine,
          arch: "x86-64",
          channel: "stable",
          first_seen: 1100,
          last_seen: 1800,
          booted_version: "0.9",
          view_snapshot: "h1",
          view_until: 9e15,
        },
      ],
    ];
    for (const [table, row] of rows) await legacy.insertInto(table).values(row).execute();
    await old.destroy();
    // The old server's files of 1.0, committed; 2.0's, uploaded.
    for (const [area, r] of [
      ["releases", v1],
      ["incoming", v2],
    ] as const) {
      mkdirSync(join(data, area, "demo", r.manifest.version), { recursive: true });
      for (const [name, bytes] of Object.entries(r.files)) writeFileSync(join(data, area, "demo", r.manifest.version, name), bytes);
    }

    const fleet = await openFleet({ data, database: target });
    try {
      const versions = await fleet.db.kysely.selectFrom("schema_migrations").select("version").orderBy("version").execute();
      expect(versions.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
      expect(await fleet.db.release("demo", "1.0")).toEqual(formatOne(v1.manifest));
      expect((await fleet.db.releases("demo")).map((r) => [r.version, r.signedBy])).toEqual([["1.0", null]]);
      // The view the device was held on named a snapshot, which is gone: its next check chooses again.
      expect((await fleet.db.device("demo", machine))?.viewIndex).toBeNull();
      const poll = { channel: "stable", image: "demo", arch: "x86-64", machine, booted: "0.9" };
      // No release carries an index yet: there is nothing signed to show.
      expect(await fleet.view(poll)).toBeUndefined();
      // Offering it, or pinning to it, says in one line what to do.
      const refused = await fleet.promote("demo", "beta", "1.0", "alice").catch((e: Error) => e);
      expect(refused).toBeInstanceOf(UserError);
      expect((refused as UserError).message).toBe(
        "demo 1.0 was published without its signed indexes (by a Basalt whose server signed them) and cannot be offered",
      );
      expect((refused as UserError).hint).toBe("run 'basalt release' and 'basalt publish' for it again with this version of Basalt");
      await expect(fleet.pin("demo", "device", machine, "1.0", "alice")).rejects.toThrow(/published without its signed indexes/);
      // The old server's upload in progress: its commit is refused before anything moves.
      await expect(fleet.commitRelease("demo", "2.0", "alice")).rejects.toThrow(/^demo 2\.0 was published without its signed indexes/);
      expect(await fleet.db.release("demo", "2.0")).toBeUndefined();
      expect(existsSync(join(data, "releases", "demo", "2.0"))).toBe(false);

      // Released again with this Basalt (the same files) and published: the indexes are recorded, and it is offered.
      expect(await fleet.beginRelease(v1.manifest, "alice")).toEqual({ committed: true });
      expect((await fleet.db.releases("demo")).map((r) => [r.version, r.signedBy])).toEqual([["1.0", v1.manifest.signingKey]]);
      expect((await fleet.db.auditLog()).find((e) => e.action === "indexes")).toMatchObject({
        actor: "alice",
        detail: { id: "demo", version: "1.0", signedBy: v1.manifest.signingKey },
      });
      const shown = await fleet.view(poll);
      expect(shown?.index.toString("base64")).toBe(v1.manifest.indexes.release.index.base64);
      expect(shown?.signature.toString("base64")).toBe(v1.manifest.indexes.release.signature.base64);
      await fleet.promote("demo", "beta", "1.0", "alice");
      await fleet.pin("demo", "device", machine, "1.0", "alice");
    } finally {
      await fleet.db.close();
    }
  });
});
