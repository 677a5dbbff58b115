// A throwaway PostgreSQL server for the tests and benchmarks: Debian's postgresql package
// (scripts/test.sh installs it), a fresh cluster in a temporary directory owned by the postgres
// user, listening on a loopback port, stopped and removed at the end.
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run } from "../../src/process/run.js";
import { freePort } from "../../src/vm/machine.js";

export interface PostgresServer {
  url: string;
  stop(): Promise<void>;
}

function binDir(): string {
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  const found = versions.map((v) => join(base, v, "bin")).find((d) => existsSync(join(d, "initdb")));
  if (!found) throw new Error("PostgreSQL is not installed (apt-get install postgresql); scripts/test.sh installs it");
  return found;
}

/** The server runs as the postgres user (it refuses root); its files live in a directory it owns. */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = binDir();
  const dir = mkdtempSync(join(tmpdir(), "basalt-pg-"));
  chmodSync(dir, 0o777);
  const data = join(dir, "data");
  const port = await freePort();
  const asPostgres = (argv: string[]) => run(["runuser", "-u", "postgres", "--", ...argv], { capture: true });
  await asPostgres([join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
  await asPostgres([
    join(bin, "pg_ctl"),
    "-D",
    data,
    "-l",
    join(dir, "server.log"),
    "-w",
    "-o",
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
    "start",
  ]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await asPostgres([join(bin, "pg_ctl"), "-D", data, "-m", "immediate", "stop"]).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A fresh, empty database on `server` for one test. */
export async function freshDatabase(server: PostgresServer, name: string): Promise<string> {
  const { openPostgres } = await import("../../src/fleet/db/sql.js");
  const { sql } = await import("kysely");
  const admin = await openPostgres(server.url);
  await sql.raw(`DROP DATABASE IF EXISTS ${name}`).execute(admin);
  await sql.raw(`CREATE DATABASE ${name}`).execute(admin);
  await admin.destroy();
  return server.url.replace(/\/postgres$/, `/${name}`);
}
