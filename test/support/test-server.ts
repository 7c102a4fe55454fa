import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { loadConfig, type Config } from '../../src/config/config.js';
import { createLogger } from '../../src/log/logger.js';
import { startServer, type RunningServer } from '../../src/http/server.js';
import type { Lookup } from '../../src/events/push-target.js';
import { readResponse } from './http.js';

export const TRUST_DOMAIN = 'agent-sts.test';
export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef0123456789abcdef';

/** Postgres server to run against when the suite is given one; otherwise the embedded database. */
export const POSTGRES_URL = process.env.DATABASE_URL || undefined;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A database of its own for one test server: a fresh Postgres database, or a temp dir for PGlite. */
export class TestDatabase {
  readonly dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-test-'));
  readonly url: string | undefined;
  private readonly name = `agent_sts_test_${randomBytes(6).toString('hex')}`;
  private created = false;

  constructor() {
    if (POSTGRES_URL) {
      const u = new URL(POSTGRES_URL);
      u.pathname = `/${this.name}`;
      this.url = u.toString();
    }
  }

  async create(): Promise<void> {
    if (!POSTGRES_URL || this.created) return;
    this.created = true;
    const client = new pg.Client({ connectionString: POSTGRES_URL });
    await client.connect();
    try {
      await client.query(`create database ${this.name}`);
    } finally {
      await client.end();
    }
  }

  async drop(): Promise<void> {
    rmSync(this.dataDir, { recursive: true, force: true });
    if (!POSTGRES_URL) return;
    const client = new pg.Client({ connectionString: POSTGRES_URL });
    await client.connect();
    try {
      await client.query(`drop database if exists ${this.name} with (force)`);
    } finally {
      await client.end();
    }
  }
}

/** The server's clock for our own checks (oidc-provider keeps the real one): tests move it forward. */
export class TestClock {
  offset = 0;
  now = () => Math.floor(Date.now() / 1000) + this.offset;
  advance(seconds: number) {
    this.offset += seconds;
  }
}

export interface TestServer {
  clock: TestClock;
  url: string;
  issuer: string;
  server: RunningServer;
  db: TestDatabase;
  logs: string[];
  config: Config;
  /** Stops the server, keeping its database. */
  stop(): Promise<void>;
  /** Starts a new server on the same database and port. */
  restart(env?: Record<string, string>): Promise<void>;
  /** Stops the server and drops its database. */
  close(): Promise<void>;
  admin(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
}

export async function startTestServer(env: Record<string, string> = {}, db = new TestDatabase(), opts: { keyRefreshMs?: number; pushLookup?: Lookup } = {}): Promise<TestServer> {
  await db.create();
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(chunk.toString());
      cb();
    },
  });
  const configFor = (extra: Record<string, string>) => loadConfig({
    ISSUER: issuer,
    PORT: String(port),
    HOST: '127.0.0.1',
    TRUST_DOMAIN,
    DATA_DIR: db.dataDir,
    AGENT_STS_ADMIN_TOKEN: ADMIN_TOKEN,
    LOG_LEVEL: 'info',
    ...(db.url ? { DATABASE_URL: db.url } : {}),
    ...env,
    ...extra,
  });
  let config = configFor({});
  const clock = new TestClock();
  let server = await startServer(config, { logger: createLogger(config.logLevel, sink), keyRefreshMs: opts.keyRefreshMs ?? 0, now: clock.now, pushLookup: opts.pushLookup });
  let running = true;

  const ts: TestServer = {
    clock,
    url: issuer,
    issuer,
    get server() {
      return server;
    },
    db,
    logs,
    get config() {
      return config;
    },
    async stop() {
      if (running) await server.close();
      running = false;
    },
    async restart(extra = {}) {
      await ts.stop();
      config = configFor(extra);
      server = await startServer(config, { logger: createLogger(config.logLevel, sink), keyRefreshMs: opts.keyRefreshMs ?? 0, now: clock.now, pushLookup: opts.pushLookup });
      running = true;
    },
    async close() {
      await ts.stop();
      await db.drop();
    },
    async admin(method, path, body, headers = {}) {
      const res = await fetch(`${issuer}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${ADMIN_TOKEN}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      return readResponse(res);
    },
  };
  return ts;
}

export const agentId = (name: string) => `spiffe://${TRUST_DOMAIN}/agents/${name}`;
export const enc = encodeURIComponent;
