// The database engines a fleet test file runs against, with the throwaway PostgreSQL server's
// lifecycle hooked into the file's tests (kept apart from postgres.ts, which the benchmarks import
// outside vitest).
import { afterAll, beforeAll } from "vitest";
import { freshDatabase, type PostgresServer, startPostgres } from "./postgres.js";

export type Engine = "sqlite" | "postgres";

/**
 * The database engines a fleet suite runs against: SQLite, and PostgreSQL on a throwaway server this
 * starts before the file's tests and stops after them. BASALT_SKIP_POSTGRES=1 leaves PostgreSQL out
 * (for a quick run where Debian's postgresql package cannot be installed; npm test never sets it).
 */
export function databaseEngines(label: string): { engines: Engine[]; fresh(engine: Engine): Promise<string | undefined> } {
  const skip = process.env.BASALT_SKIP_POSTGRES === "1";
  let server: PostgresServer | undefined;
  let count = 0;
  beforeAll(async () => {
    if (!skip) server = await startPostgres();
  }, 60_000);
  // Stopping takes a while on a busy machine.
  afterAll(async () => {
    await server?.stop();
  }, 60_000);
  return {
    engines: skip ? ["sqlite"] : ["sqlite", "postgres"],
    /** An empty PostgreSQL database for one test, or undefined for SQLite (the caller's file). */
    async fresh(engine) {
      if (engine !== "postgres" || !server) return undefined;
      return freshDatabase(server, `${label}_${process.pid}_${++count}`);
    },
  };
}
