// Fault injection for the fleet database in tests: a Kysely plugin on one transaction that acts on
// the statement whose SQL, as compiled for the engine (`insert into "audit" …`), matches a pattern.
import type { KyselyPlugin, QueryId, Transaction } from "kysely";
import type { Database } from "../../src/fleet/db/tables.js";

export interface StatementHook {
  /** Runs before a matching statement is sent; a throw fails the statement, the statements before it having run. */
  before?: (sql: string) => void;
  /** Runs once a matching statement has run. */
  after?: (sql: string) => void;
}

/** `tx`, with `hook` called around each of its statements that matches `pattern`. */
export function hookStatements(tx: Transaction<Database>, pattern: RegExp, hook: StatementHook): Transaction<Database> {
  const executor = tx.getExecutor();
  const matched = new Map<QueryId, string>();
  const plugin: KyselyPlugin = {
    transformQuery({ node, queryId }) {
      const { sql } = executor.compileQuery(node, queryId);
      if (pattern.test(sql)) {
        hook.before?.(sql);
        matched.set(queryId, sql);
      }
      return node;
    },
    async transformResult({ result, queryId }) {
      const sql = matched.get(queryId);
      if (sql !== undefined) {
        matched.delete(queryId);
        hook.after?.(sql);
      }
      return result;
    },
  };
  return tx.withPlugin(plugin);
}
