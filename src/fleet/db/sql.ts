// The two SQL engines the fleet database runs on, behind one small driver: SQLite (embedded, the
// default: nothing to install) and PostgreSQL (for several server replicas behind a load balancer).
// Queries are written once with `?` placeholders; the PostgreSQL driver numbers them.
import Database from "better-sqlite3";
import pg from "pg";
import { UserError } from "../../errors.js";

export type Dialect = "sqlite" | "postgres";
export type Param = string | number | boolean | null | Buffer;
export type Row = Record<string, unknown>;

export interface Sql {
  readonly dialect: Dialect;
  all<T = Row>(sql: string, params?: Param[]): Promise<T[]>;
  get<T = Row>(sql: string, params?: Param[]): Promise<T | undefined>;
  run(sql: string, params?: Param[]): Promise<{ changes: number }>;
  /** Runs `fn` in one transaction; rows it reads with `FOR UPDATE` stay locked until it ends (PostgreSQL). */
  transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** One queue for a single SQLite connection: a transaction's statements never interleave with another's. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  lock<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

const bind = (params: Param[]) => params.map((p) => (typeof p === "boolean" ? (p ? 1 : 0) : p));

class SqliteSql implements Sql {
  readonly dialect = "sqlite" as const;
  private readonly mutex = new Mutex();

  constructor(
    private readonly db: Database.Database,
    private readonly inTransaction = false,
    private readonly statements = new Map<string, Database.Statement>(),
  ) {}

  // Preparing is most of the cost of a small query; the set of statements is small and fixed.
  private prepare(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql.replace(/\s+FOR UPDATE\b/gi, ""));
      this.statements.set(sql, st);
    }
    return st;
  }

  private exec<T>(fn: () => T): Promise<T> {
    if (this.inTransaction) return Promise.resolve().then(fn);
    return this.mutex.lock(async () => fn());
  }

  all<T>(sql: string, params: Param[] = []): Promise<T[]> {
    return this.exec(() => this.prepare(sql).all(...bind(params)) as T[]);
  }
  get<T>(sql: string, params: Param[] = []): Promise<T | undefined> {
    return this.exec(() => this.prepare(sql).get(...bind(params)) as T | undefined);
  }
  run(sql: string, params: Param[] = []): Promise<{ changes: number }> {
    return this.exec(() => ({ changes: this.prepare(sql).run(...bind(params)).changes }));
  }
  transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    if (this.inTransaction) return fn(this);
    return this.mutex.lock(async () => {
      this.db.exec("BEGIN IMMEDIATE");
      try {
        const out = await fn(new SqliteSql(this.db, true, this.statements));
        this.db.exec("COMMIT");
        return out;
      } catch (e) {
        this.db.exec("ROLLBACK");
        throw e;
      }
    });
  }
  async close(): Promise<void> {
    await this.mutex.lock(async () => this.db.close());
  }
}

export function openSqlite(path: string): Sql {
  let db: Database.Database;
  try {
    db = new Database(path);
  } catch (e) {
    throw new UserError(`${path}: cannot open the SQLite database: ${(e as Error).message}`);
  }
  // WAL: readers do not wait for the writer; NORMAL sync is durable across process crashes.
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma("busy_timeout = 5000");
  db.pragma("foreign_keys = ON");
  return new SqliteSql(db);
}

const numbered = (sql: string) => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

type PgQueryable = pg.Pool | pg.PoolClient;

class PostgresSql implements Sql {
  readonly dialect = "postgres" as const;
  constructor(
    private readonly q: PgQueryable,
    private readonly pool: pg.Pool,
  ) {}

  async all<T>(sql: string, params: Param[] = []): Promise<T[]> {
    return (await this.q.query(numbered(sql), bind(params))).rows as T[];
  }
  async get<T>(sql: string, params: Param[] = []): Promise<T | undefined> {
    return (await this.all<T>(sql, params))[0];
  }
  async run(sql: string, params: Param[] = []): Promise<{ changes: number }> {
    return { changes: (await this.q.query(numbered(sql), bind(params))).rowCount ?? 0 };
  }
  async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
    if (this.q !== this.pool) return fn(this);
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const out = await fn(new PostgresSql(client, this.pool));
      await client.query("COMMIT");
      return out;
    } catch (e) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }
  async close(): Promise<void> {
    await this.pool.end();
  }
}

export async function openPostgres(url: string, options: { max?: number } = {}): Promise<Sql> {
  // Times are BIGINT milliseconds and counts are bigints; both fit a JavaScript number.
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
  return new PostgresSql(pool, pool);
}

/** A database URL without its password, for messages and logs. */
export function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
}

/** `sqlite:PATH` (or a bare path) or `postgres://…` / `postgresql://…`. */
export async function openSql(url: string): Promise<Sql> {
  if (/^postgres(ql)?:\/\//.test(url)) return openPostgres(url);
  return openSqlite(url.replace(/^sqlite:(\/\/)?/, ""));
}
