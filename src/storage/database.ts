import { join, resolve } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import pg from 'pg';
import { lockDataDir } from './data-dir-lock.js';
import { openEmbeddedDatabase, type EmbeddedDatabase } from './embedded-database.js';
import { migrationSource } from '../../migrations/index.js';
import { boundedPgClient, DatabaseTimeoutError } from './bounded-pg-client.js';

export type Db = Knex;

export interface Database {
  knex: Knex;
  kind: 'postgres' | 'embedded';
  /** The embedded database, when that is the one in use. */
  embedded?: EmbeddedDatabase;
  /** Runs pending migrations; returns the names applied. */
  migrate(): Promise<string[]>;
  /**
   * True when a trivial query answers within {@link Database.pingTimeoutMs} (at most one such query is in flight;
   * concurrent callers share it), so a readiness probe answers promptly even while the database hangs.
   */
  ping(): Promise<boolean>;
  /** How long {@link Database.ping} waits. */
  pingTimeoutMs: number;
  /** The deadline of every query (and of every wait for a connection), in ms. */
  timeoutMs: number;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl: string | undefined;
  dataDir: string;
  poolMax: number;
  /**
   * The longest a query waits for a connection, and then for its answer (`DATABASE_TIMEOUT_MS`); default 3000.
   * Migrations are not bounded.
   */
  timeoutMs?: number;
  /** Where knex's own warnings go (a connection lost, a wait for a connection given up); default the console. */
  log?: (level: 'warn' | 'error' | 'deprecate', message: string) => void;
}

export const DEFAULT_DATABASE_TIMEOUT_MS = 3000;

/**
 * What `promise` settles to, or `fallback` when that takes longer than `ms` (the promise then runs on; its
 * outcome is ignored).
 */
export function within<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(fallback), ms);
    promise.then((v) => {
      clearTimeout(timer);
      resolve(v);
    }, (err: unknown) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * `read` with at most one call in flight (callers while one runs share its outcome), answered within `ms`:
 * undefined when it fails or takes longer. For probes and gauges that must answer while the database hangs,
 * without piling up queries on it.
 */
export function promptly<T>(read: () => Promise<T>, ms: number): () => Promise<T | undefined> {
  let inflight: Promise<T | undefined> | undefined;
  return () => {
    inflight ??= read().catch(() => undefined).finally(() => {
      inflight = undefined;
    });
    return within(inflight, ms, undefined);
  };
}

// BIGINT columns (epoch seconds, counters) come back as numbers, not strings.
pg.types.setTypeParser(pg.types.builtins.INT8, (v: string) => Number.parseInt(v, 10));

/** Why a first connection failed, in a form a person can act on. */
function connectionProblem(err: Error & { code?: string }): string {
  // PostgreSQL's invalid_catalog_name: agent-sts does not create databases (that needs a privilege it should not hold).
  if (err.code === '3D000') return `${err.message}; create it first (createdb, or CREATE DATABASE)`;
  if (err.name === 'KnexTimeoutError') return 'no connection within 10 s (is the host reachable and PostgreSQL listening?)';
  return err.message;
}

export async function openDatabase(opts: DatabaseOptions): Promise<Database> {
  let knex: Knex;
  let release = () => {};
  let kind: Database['kind'];
  let embedded: EmbeddedDatabase | undefined;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_DATABASE_TIMEOUT_MS;
  const sink = opts.log;
  const log = sink ? {
    log: {
      warn: (m: unknown) => sink('warn', String(m)),
      error: (m: unknown) => sink('error', String(m)),
      deprecate: (m: unknown) => sink('deprecate', String(m)),
      debug: () => {},
    },
  } : {
    // Without a logger, knex prints every failed connection attempt with its stack; the error reaches the caller
    // anyway (at start: one line naming DATABASE_URL), so those lines are dropped and other warnings kept.
    log: { warn: (message: unknown) => { if (!String(message).startsWith('Acquire connection error')) console.warn(message); } },
  };
  if (opts.databaseUrl) {
    kind = 'postgres';
    knex = knexFactory({
      // Every query is answered, or fails, within timeoutMs; a connection that went unanswered is closed, not reused.
      client: boundedPgClient(timeoutMs),
      connection: {
        connectionString: opts.databaseUrl,
        // Opening a connection (TCP, TLS, authentication) is bounded too.
        connectionTimeoutMillis: timeoutMs,
        // So that an idle connection on a dead network path is noticed and dropped.
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
      } as Knex.PgConnectionConfig,
      pool: { min: 0, max: opts.poolMax },
      acquireConnectionTimeout: timeoutMs,
      ...log,
    });
  } else {
    kind = 'embedded';
    release = lockDataDir(opts.dataDir);
    try {
      embedded = await openEmbeddedDatabase(join(resolve(opts.dataDir), 'pgdata'));
    } catch (err) {
      release();
      throw new Error(`cannot open the embedded database: ${(err as Error).message}`);
    }
    knex = knexFactory({
      client: ClientPgLite as unknown as typeof Knex.Client,
      dialect: 'postgres',
      // knex-pglite uses the instance given (and closes it when knex is destroyed).
      connection: { pglite: embedded.pglite } as unknown as Knex.StaticConnectionConfig,
      // The one connection: a query waits for it at most timeoutMs. A statement running in PGlite can't be cut
      // short (it runs on this thread, and PGlite ignores statement_timeout): see the README.
      acquireConnectionTimeout: timeoutMs,
      ...log,
    });
  }
  try {
    await knex.raw('select 1');
  } catch (err) {
    await knex.destroy().catch(() => {});
    release();
    throw new Error(`cannot reach the ${kind === 'postgres' ? 'database at DATABASE_URL' : 'embedded database'}: ${connectionProblem(err as Error & { code?: string })}`);
  }
  const pingTimeoutMs = Math.min(timeoutMs, 1000);
  const ping = promptly(() => knex.raw('select 1').then(() => true), pingTimeoutMs);
  return {
    knex,
    kind,
    ...(embedded ? { embedded } : {}),
    timeoutMs,
    pingTimeoutMs,
    async migrate() {
      if (kind === 'embedded') {
        const [, applied] = await knex.migrate.latest({ migrationSource });
        return applied as string[];
      }
      // Migrations may take longer than any request should: they run on a connection of their own, without the deadline.
      const unbounded = knexFactory({ client: 'pg', connection: opts.databaseUrl, pool: { min: 0, max: 1 } });
      try {
        const [, applied] = await unbounded.migrate.latest({ migrationSource });
        return applied as string[];
      } finally {
        await unbounded.destroy();
      }
    },
    async ping() {
      return (await ping()) === true;
    },
    async close() {
      try {
        if (kind === 'embedded') {
          // In this process: nothing can hang it but a statement already running, and the data directory stays
          // locked until PGlite has closed.
          await knex.destroy();
        } else {
          // Queries in flight end within the deadline and idle connections close within a second, so this is
          // bounded even when the database hangs; the bound here is only a last resort.
          const late = await within(knex.destroy(), 2 * timeoutMs + 1000, 'late');
          if (late === 'late') throw new DatabaseTimeoutError('the database connections did not close in time');
        }
      } finally {
        release();
      }
    },
  };
}
