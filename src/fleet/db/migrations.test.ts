// Schema migrations on both engines: applied once, recorded, and safe when replicas start together.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshDatabase, type PostgresServer, startPostgres } from "../../../tests/support/postgres.js";
import { MIGRATIONS, migrate, SCHEMA_VERSION } from "./migrations.js";
import { openSql } from "./sql.js";

let pg: PostgresServer | undefined;
let n = 0;
beforeAll(async () => {
  if (process.env.BASALT_SKIP_POSTGRES !== "1") pg = await startPostgres();
}, 60_000);
afterAll(async () => {
  await pg?.stop();
});

const backends = process.env.BASALT_SKIP_POSTGRES === "1" ? ["sqlite"] : ["sqlite", "postgres"];

describe.each(backends)("migrations on %s", (backend) => {
  const url = async () =>
    backend === "postgres" && pg ? freshDatabase(pg, `migrations_${process.pid}_${++n}`) : join(mkdtempSync(join(tmpdir(), "basalt-mig-")), "fleet.db");

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
