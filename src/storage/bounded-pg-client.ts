import { createRequire } from 'node:module';
import type { Knex } from 'knex';

/**
 * A query, or a wait for a connection, that the database did not answer within the deadline
 * (`DATABASE_TIMEOUT_MS`). Its outcome is unknown: a write may or may not have committed.
 */
export class DatabaseTimeoutError extends Error {
  override readonly name = 'DatabaseTimeoutError';
}

/** The parts of a node-postgres client used here. */
export interface PgConnection {
  query(config: { text: string; values: unknown[]; name?: string }, callback: (err: Error | null, result: { rows: unknown[] }) => void): void;
  end(callback: () => void): void;
  connection?: { stream?: { destroy(): void } };
  /** Set by knex on a connection that failed; the pool then destroys it instead of handing it out again. */
  __knex__disposed?: unknown;
}

interface CompiledQuery {
  sql?: string;
  bindings?: unknown[];
  options?: Record<string, unknown>;
  response?: unknown;
}

interface PgClientBase {
  acquireRawConnection(): Promise<PgConnection>;
  _query(connection: PgConnection, obj: CompiledQuery): Promise<CompiledQuery>;
  destroyRawConnection(connection: PgConnection): Promise<void>;
}

const require = createRequire(import.meta.url);
const ClientPG = require('knex/lib/dialects/postgres/index.js') as new (config: Knex.Config) => PgClientBase;

/**
 * Marks the connection as unusable and closes its socket at once: a connection whose query went unanswered may be
 * on a frozen server or a dead network path, and a later query on it would wait behind the first. knex's pool then
 * destroys it rather than hand it out again.
 */
export function discardConnection(connection: PgConnection, reason: string): void {
  connection.__knex__disposed ??= reason;
  connection.connection?.stream?.destroy();
}

/**
 * Runs a query on `connection`, failing with {@link DatabaseTimeoutError} if no answer came within `ms`. A
 * connection that timed out is discarded (its late answer, if any, is ignored).
 */
export function queryWithin<R = { rows: unknown[] }>(connection: PgConnection, config: { text: string; values: unknown[]; name?: string }, ms: number): Promise<R> {
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      discardConnection(connection, `no answer within ${ms} ms`);
      reject(new DatabaseTimeoutError(`the database did not answer within ${ms} ms`));
    }, ms);
    try {
      connection.query(config, (err, result) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(result as R);
      });
    } catch (err) {
      done = true;
      clearTimeout(timer);
      reject(err);
    }
  });
}

/** A knex PostgreSQL client that bounds every query, and the closing of a connection, by `timeoutMs`. */
export interface BoundedPgClient {
  readonly queryTimeoutMs: number;
}

export function boundedPgClient(timeoutMs: number): typeof Knex.Client {
  class BoundedClientPG extends ClientPG implements BoundedPgClient {
    get queryTimeoutMs() {
      return timeoutMs;
    }

    /** A new connection, or a {@link DatabaseTimeoutError} when the server did not complete the handshake in time. */
    override async acquireRawConnection(): Promise<PgConnection> {
      try {
        return await super.acquireRawConnection();
      } catch (err) {
        // node-postgres's connectionTimeoutMillis closes the socket with this error.
        if ((err as Error | undefined)?.message === 'timeout expired') throw new DatabaseTimeoutError(`no connection to the database within ${timeoutMs} ms`, { cause: err });
        throw err;
      }
    }

    override _query(connection: PgConnection, obj: CompiledQuery): Promise<CompiledQuery> {
      if (!obj.sql) throw new Error('The query is empty');
      return queryWithin(connection, { text: obj.sql, values: obj.bindings ?? [], ...obj.options }, timeoutMs).then((response) => {
        obj.response = response;
        return obj;
      });
    }

    /**
     * Ends the connection politely, or closes its socket when the server does not answer the goodbye soon (a frozen
     * server never does, and the pool's destruction, on shutdown, would wait for it forever).
     */
    override destroyRawConnection(connection: PgConnection): Promise<void> {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          discardConnection(connection, 'closing');
          resolve();
        }, Math.min(timeoutMs, 1000));
        connection.end(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
  return BoundedClientPG as unknown as typeof Knex.Client;
}

/** The query deadline of a knex instance opened with {@link boundedPgClient}; undefined for any other. */
export function queryTimeoutOf(db: Knex): number | undefined {
  const ms = (db.client as Partial<BoundedPgClient>).queryTimeoutMs;
  return typeof ms === 'number' ? ms : undefined;
}
