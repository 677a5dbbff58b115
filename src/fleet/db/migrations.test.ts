// Schema migrations on both engines: applied once, recorded, and safe when replicas start together.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { databaseEngines } from "../../../tests/support/postgres.js";
import { MIGRATIONS, migrate, SCHEMA_VERSION } from "./migrations.js";
import { openSql } from "./sql.js";

const { engines, fresh } = databaseEngines("migrations");

describe.each(engines)("migrations on %s", (backend) => {
  const url = async () => (await fresh(backend)) ?? join(mkdtempSync(join(tmpdir(), "basalt-mig-")), "fleet.db");

  it("applies every migration once and records it", async () => {
    const target = await url();
    const sql = await openSql(target);
    expect(await migrate(sql)).toEqual(MIGRATIONS.map((m) => m.version));
    expect(await migrate(sql)).toEqual([]);
    const rows = await sql.all<{ version: number; name: string }>("SELECT version, name FROM schema_migrations ORDER BY version");
    expect(rows.map((r) => Number(r.version))).toEqual(MIGRATIONS.map((m) => m.version));
    expect(Math.max(...rows.map((r) => Number(r.version)))).toBe(SCHEMA_VERSION);
    await sql.close();
  });

  // Replicas share PostgreSQL; SQLite serves one server (and its connections in one process would
  // wait for each other synchronously, which says nothing about separate servers).
  it.runIf(backend === "postgres")("lets replicas that start at the same moment migrate one after the other", async () => {
    const target = await url();
    const replicas = await Promise.all([openSql(target), openSql(target), openSql(target)]);
    const applied = await Promise.all(replicas.map((r) => migrate(r)));
    expect(applied.flat().sort()).toEqual(MIGRATIONS.map((m) => m.version).sort());
    for (const r of replicas) await r.close();
  });
});
