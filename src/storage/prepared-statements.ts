import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import { queryTimeoutOf, queryWithin, type PgConnection } from './bounded-pg-client.js';

type Statement = { name: string; text: string; values: unknown[] };

interface PoolClient {
  config: { client?: unknown };
  acquireConnection(): Promise<PgConnection & { query(config: Statement): Promise<{ rows: unknown[] }> }>;
  releaseConnection(connection: PgConnection): Promise<void>;
}

/** `?` placeholders as PostgreSQL's `$1, $2, …` (the statements given here hold no other `?`). */
const positional = (sql: string) => {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
};

const names = new Map<string, { name: string; text: string }>();

/**
 * Runs a statement of the group commit's hot path. On PostgreSQL it is a named prepared statement, parsed
 * once per connection and, after a few executions, run on a cached plan: the parsing and planning it
 * saves were about half of what PostgreSQL spent on each batch. The text must come from a small set of
 * shapes (one name each, kept per connection for its life). Elsewhere (the embedded database) it runs
 * through knex as any other query. It is bounded by the database's query deadline, like every other query.
 */
export async function runPrepared(db: Knex, sql: string, bindings: Knex.RawBinding[]): Promise<unknown[]> {
  const client = db.client as unknown as PoolClient;
  const timeoutMs = queryTimeoutOf(db);
  if (timeoutMs === undefined && client.config.client !== 'pg') return ((await db.raw(sql, bindings)) as { rows: unknown[] }).rows;
  let statement = names.get(sql);
  if (!statement) {
    statement = { name: `sts_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`, text: positional(sql) };
    if (names.size < 1000) names.set(sql, statement);
  }
  const connection = await client.acquireConnection();
  try {
    const query = { ...statement, values: bindings };
    return (timeoutMs === undefined ? await connection.query(query) : await queryWithin(connection, query, timeoutMs)).rows;
  } finally {
    await client.releaseConnection(connection);
  }
}
