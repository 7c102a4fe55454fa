import { createHash } from 'node:crypto';
import type { Knex } from 'knex';

interface PgConnection {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[] }>;
}

interface PoolClient {
  config: { client?: unknown };
  acquireConnection(): Promise<PgConnection>;
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
 * through knex as any other query.
 */
export async function runPrepared(db: Knex, sql: string, bindings: Knex.RawBinding[]): Promise<unknown[]> {
  const client = db.client as unknown as PoolClient;
  if (client.config.client !== 'pg') return ((await db.raw(sql, bindings)) as { rows: unknown[] }).rows;
  let statement = names.get(sql);
  if (!statement) {
    statement = { name: `sts_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`, text: positional(sql) };
    if (names.size < 1000) names.set(sql, statement);
  }
  const connection = await client.acquireConnection();
  try {
    return (await connection.query({ ...statement, values: bindings })).rows;
  } finally {
    await client.releaseConnection(connection);
  }
}
