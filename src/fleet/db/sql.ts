// The two SQL engines the fleet database runs on, behind Kysely: SQLite (embedded, the default:
// nothing to install) over better-sqlite3, and PostgreSQL (for several server replicas behind a load
// balancer) over a pg pool. Queries are built with Kysely and typed by `Database` (tables.ts).
import { once } from "node:events";
import { Worker } from "node:worker_threads";
import BetterSqlite3 from "better-sqlite3";
import {
  CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  PostgresAdapter,
  PostgresDialect,
  SqliteDialect,
  type SqliteDialectConfig,
  SqliteDriver,
  type SqliteStatement,
} from "kysely";
import pg from "pg";
import { UserError } from "../../errors.js";
import type { Database } from "./tables.js";

export type Engine = "sqlite" | "postgres";

/** Which engine a database (or a transaction on it) runs on: for what differs, such as row and advisory locks. */
export function engineOf(db: Kysely<Database>): Engine {
  return db.getExecutor().adapter instanceof PostgresAdapter ? "postgres" : "sqlite";
}

/**
 * Kysely's SQLite driver keeps one connection and lends it to one query or transaction at a time
 * (a transaction holds it from BEGIN to COMMIT), so a transaction's reads and writes never interleave
 * with another's. Changed here: the waiters queue in order (Kysely's mutex wakes every waiter on each
 * release); a transaction takes the write lock when it begins (BEGIN IMMEDIATE), so one that reads
 * and then writes cannot fail half-way on another process's write; closing waits for the connection
 * to be free, so work in flight ends first, and stops the checkpointer before the connection closes.
 */
class QueuedSqliteDriver extends SqliteDriver {
  private readonly waiting: (() => void)[] = [];
  private busy = false;

  constructor(
    settings: SqliteDialectConfig,
    private readonly checkpointer: Checkpointer | undefined,
  ) {
    super(settings);
  }

  override async acquireConnection(): Promise<DatabaseConnection> {
    if (this.busy) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.busy = true;
    return super.acquireConnection();
  }

  override async releaseConnection(): Promise<void> {
    await super.releaseConnection();
    const next = this.waiting.shift();
    // Handed on while still busy: a query that arrives now queues behind `next`.
    if (next) next();
    else this.busy = false;
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("BEGIN IMMEDIATE"));
  }

  override async destroy(): Promise<void> {
    await this.acquireConnection();
    await this.checkpointer?.stop();
    await super.destroy();
  }
}

class QueuedSqliteDialect extends SqliteDialect {
  constructor(
    private readonly settings: SqliteDialectConfig,
    private readonly checkpointer: Checkpointer | undefined,
  ) {
    super(settings);
  }
  override createDriver(): Driver {
    return new QueuedSqliteDriver(this.settings, this.checkpointer);
  }
}

interface Checkpointer {
  /** Runs a last checkpoint and ends the thread. */
  stop(): Promise<void>;
}

/** How often the checkpoint worker copies the write-ahead log into the database file. */
const CHECKPOINT_INTERVAL_MS = 250;

/**
 * Moves the WAL checkpoints of `db` to a worker thread (checkpoint-worker.mjs). SQLite runs them
 * itself after a commit once the log passes 1000 pages, on the connection that commits: here the
 * event loop, stopped for each of the checkpoint's fsyncs (a measured 5–25 ms, once every hundred or
 * so small transactions). Should the worker fail, SQLite's own checkpoints take over again.
 */
function startCheckpointer(db: BetterSqlite3.Database): Checkpointer {
  // No execArgv: the worker is plain JavaScript and needs none of the loaders (tsx) the process may run with.
  const worker = new Worker(new URL("./checkpoint-worker.mjs", import.meta.url), {
    workerData: { path: db.name, intervalMs: CHECKPOINT_INTERVAL_MS },
    execArgv: [],
  });
  // A server that is done exits whether or not its database was closed.
  worker.unref();
  let running = true;
  const exited = once(worker, "exit").catch(() => undefined);
  const fallBack = () => {
    running = false;
    if (db.open) db.pragma("wal_autocheckpoint = 1000");
  };
  worker.on("message", (m: { error?: string }) => {
    if (m.error) fallBack();
  });
  worker.on("error", fallBack);
  worker.on("exit", fallBack);
  db.pragma("wal_autocheckpoint = 0");
  return {
    async stop() {
      // Waited for: the process stays up until the last checkpoint is done.
      worker.ref();
      if (running) worker.postMessage("close");
      await exited;
    },
  };
}

/** At most this many prepared statements are kept; the fleet's queries are a small, fixed set far below it. */
const STATEMENT_CACHE = 500;

/** better-sqlite3 keeping its prepared statements: preparing is most of the cost of a small query. */
function withStatementCache(db: BetterSqlite3.Database): SqliteDialectConfig["database"] {
  const statements = new Map<string, SqliteStatement>();
  return {
    prepare(sql: string): SqliteStatement {
      let st = statements.get(sql);
      if (!st) {
        if (statements.size >= STATEMENT_CACHE) statements.clear();
        st = db.prepare(sql);
        statements.set(sql, st);
      }
      return st;
    },
    close: () => db.close(),
  };
}

export function openSqlite(path: string): Kysely<Database> {
  let db: BetterSqlite3.Database;
  try {
    db = new BetterSqlite3(path);
  } catch (e) {
    throw new UserError(`${path}: cannot open the SQLite database: ${(e as Error).message}`);
  }
  // WAL: readers do not wait for the writer; NORMAL sync is durable across process crashes.
  const wal = db.pragma("journal_mode = WAL", { simple: true }) === "wal";
  db.pragma("synchronous = NORMAL");
  db.pragma("busy_timeout = 5000");
  db.pragma("foreign_keys = ON");
  // An in-memory database has no log to checkpoint.
  const checkpointer = wal ? startCheckpointer(db) : undefined;
  return new Kysely<Database>({ dialect: new QueuedSqliteDialect({ database: withStatementCache(db) }, checkpointer) });
}

export async function openPostgres(url: string, options: { max?: number } = {}): Promise<Kysely<Database>> {
  // Times are BIGINT milliseconds and counts are bigints (sums NUMERIC); all fit a JavaScript number.
  const types = {
    getTypeParser: (oid: number, format?: "text" | "binary") =>
      oid === 20 ? (v: string) => Number(v) : oid === 1700 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format),
  };
  const pool = new pg.Pool({ connectionString: url, max: options.max ?? 10, types: types as pg.CustomTypesConfig });
  try {
    const c = await pool.connect();
    c.release();
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw new UserError(`${redact(url)}: cannot connect to PostgreSQL: ${(e as Error).message}`);
  }
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

/** A database URL without its password, for messages and logs. */
export function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}

/** `sqlite:PATH` (or a bare path) or `postgres://…` / `postgresql://…`. */
export async function openSql(url: string): Promise<Kysely<Database>> {
  if (/^postgres(ql)?:\/\//.test(url)) return openPostgres(url);
  return openSqlite(url.replace(/^sqlite:(\/\/)?/, ""));
}
