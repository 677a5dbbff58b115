// FleetDb on both engines, where the fleet suites do not reach: changes of one device that race,
// and rows that do not read back as they were stored.
import { existsSync, mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import { afterEach, describe, expect, it, vi } from "vitest";
import { databaseEngines } from "../../../tests/support/database-engines.js";
import { standInRelease } from "../../../tests/support/fleet-server.js";
import { type Device, newDevice } from "../inventory.js";
import { FleetDb } from "./fleet-db.js";
import { StoredDataError } from "./tables.js";

const { engines, fresh } = databaseEngines("fleetdb");
const open: FleetDb[] = [];

afterEach(async () => {
  for (const db of open.splice(0)) await db.close();
});

const MACHINE = "0123456789abcdef0123456789abcdef";

const device = (at: number): Device => ({ ...newDevice("demo", MACHINE, "x86-64", "stable", at), bootedVersion: "1.0" });

describe.each(engines)("FleetDb on %s", (backend) => {
  async function db(): Promise<FleetDb> {
    const url = (await fresh(backend)) ?? join(mkdtempSync(join(tmpdir(), "basalt-fleetdb-")), "fleet.db");
    const d = await FleetDb.open(url);
    open.push(d);
    return d;
  }

  it("applies concurrent changes of one device one after the other, from its first sighting on: each sees the one before", async () => {
    const d = await db();
    // Read, then write: without the row lock on PostgreSQL, or with SQLite's transactions
    // interleaved, increments would be lost. A row lock guards only a row that exists: when the
    // first sightings of a device arrive together, each must still see the one before (several
    // devices, so that a lost first sighting shows reliably).
    const machines = Array.from({ length: 6 }, (_, k) => `${k}`.repeat(32));
    await Promise.all(
      machines.flatMap((m) =>
        Array.from({ length: 40 }, (_, i) =>
          d.updateDevice("demo", m, (prev) => {
            const next = prev ? { ...prev, reboots: prev.reboots + 1, lastSeen: i } : { ...device(i), machine: m };
            return { device: next, events: [{ kind: "seen", at: i, version: "1.0" }] };
          }),
        ),
      ),
    );
    for (const m of machines) {
      expect((await d.device("demo", m))?.reboots, m).toBe(39);
      expect((await d.events({ image: "demo", machine: m, limit: 100 })).length).toBe(40);
    }
  });

  // The main connection never checkpoints (its fsyncs would stop the event loop): the database
  // file grows only because the worker copies the log into it.
  it.runIf(backend === "sqlite")("checkpoints the write-ahead log on a worker thread", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "basalt-fleetdb-")), "fleet.db");
    const d = await FleetDb.open(path);
    open.push(d);
    const setting = await sql<{ wal_autocheckpoint: number }>`PRAGMA wal_autocheckpoint`.execute(d.kysely);
    expect(setting.rows).toEqual([{ wal_autocheckpoint: 0 }]);
    const before = statSync(path).size;
    for (let i = 0; i < 200; i++) {
      const machine = i.toString(16).padStart(32, "0");
      await d.updateDevice("demo", machine, () => ({ device: { ...device(i), machine }, events: [{ kind: "seen", at: i, version: "1.0" }] }));
    }
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);
    await vi.waitFor(() => expect(statSync(path).size).toBeGreaterThan(before), { timeout: 5000, interval: 50 });
    await d.close();
    open.pop();
    // Closed: the log is in the file, and gone.
    expect(existsSync(`${path}-wal`)).toBe(false);
    const again = await FleetDb.open(path);
    open.push(again);
    expect((await again.devices({ image: "demo" })).total).toBe(200);
  });

  it("refuses a row whose JSON does not read, naming the table, the row and the column", async () => {
    const d = await db();
    await d.updateDevice("demo", MACHINE, () => ({ device: device(1), events: [] }));
    await d.kysely.updateTable("devices").set({ report: '{"event":"boot"}' }).where("machine", "=", MACHINE).execute();
    const e = await d.device("demo", MACHINE).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StoredDataError);
    expect((e as Error).message).toMatch(
      new RegExp(`^fleet database: devices \\(image=demo, machine=${MACHINE}\\): column report does not read as stored: version: `),
    );

    await d.kysely.updateTable("devices").set({ report: null, rolled_back: "[1.0" }).where("machine", "=", MACHINE).execute();
    await expect(d.devices({ image: "demo" })).rejects.toThrow(
      `devices (image=demo, machine=${MACHINE}): column rolled_back does not read as stored: not JSON`,
    );

    await d.audit(1, "op", "test", { ok: true });
    await d.kysely.updateTable("audit").set({ detail: "[]" }).execute();
    await expect(d.auditLog()).rejects.toThrow(/^fleet database: audit \(seq=1\): column detail does not read as stored: /);

    const m = (await standInRelease("demo", "1.0")).manifest;
    await d.kysely
      .insertInto("releases")
      .values({ image: "demo", version: "1.0", manifest: JSON.stringify({ ...m, files: [] }), committed_at: 1 })
      .execute();
    await expect(d.release("demo", "1.0")).rejects.toThrow(
      /^fleet database: releases \(image=demo, version=1\.0\): column manifest does not read as stored: files: /,
    );
  });
});
