import { join, resolve } from 'node:path';
import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import pg from 'pg';
import { lockDataDir } from './data-dir-lock.js';
import { openEmbeddedDatabase, type EmbeddedDatabase } from './embedded-database.js';
import { migrationSource } from '../../migrations/index.js';

export type Db = Knex;

export interface Database {
  knex: Knex;
  kind: 'postgres' | 'embedded';
  /** The embedded database, when that is the one in use. */
  embedded?: EmbeddedDatabase;
  /** Runs pending migrations; returns the names applied. */
  migrate(): Promise<string[]>;
  /** True when a trivial query answers. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl: string | undefined;
  dataDir: string;
  poolMax: number;
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
  if (opts.databaseUrl) {
    kind = 'postgres';
    knex = knexFactory({
      client: 'pg',
      connection: opts.databaseUrl,
      pool: { min: 0, max: opts.poolMax },
      acquireConnectionTimeout: 10_000,
      // knex prints every failed connection attempt with its stack; the error reaches the caller anyway (at start:
      // one line naming DATABASE_URL), so those lines are dropped and other warnings kept.
      log: { warn: (message: string) => { if (!String(message).startsWith('Acquire connection error')) console.warn(message); } },
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
      acquireConnectionTimeout: 30_000,
    });
  }
  try {
    await knex.raw('select 1');
  } catch (err) {
    await knex.destroy().catch(() => {});
    release();
    throw new Error(`cannot reach the ${kind === 'postgres' ? 'database at DATABASE_URL' : 'embedded database'}: ${connectionProblem(err as Error & { code?: string })}`);
  }
  return {
    knex,
    kind,
    ...(embedded ? { embedded } : {}),
    async migrate() {
      const [, applied] = await knex.migrate.latest({ migrationSource });
      return applied as string[];
    },
    async ping() {
      try {
        await knex.raw('select 1');
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      try {
        await knex.destroy();
      } finally {
        release();
      }
    },
  };
}
