import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { exportJWK, generateKeyPair } from 'jose';
import { ADMIN_TOKEN as FAULTS_ADMIN_TOKEN, findPgBin, freePort, Load, PgCluster, ServerProcess, sleep, summarize, TcpProxy, type Outcome } from './support.js';
import { ADMIN_TOKEN as TEST_ADMIN_TOKEN, agentId, startTestServer, type TestDatabase, type TestServer } from '../support/test-server.js';
import { registerSecretAgent } from '../support/agents.js';
import { openDatabase, type Database } from '../../src/storage/database.js';
import { RecordWriter } from '../../src/storage/record-writer.js';
import type { NewTokenRecord } from '../../src/storage/tokens-repo.js';

// A database that hangs (SIGSTOP on PostgreSQL, or a network path that stops forwarding) rather than one that is
// stopped: nothing is refused, nothing answers. The test runs its own cluster and a TCP proxy in front of it.
const PG_BIN = findPgBin();

/** DATABASE_TIMEOUT_MS for these servers. */
const TIMEOUT_MS = 1500;
/** How long any answer may take while the database hangs: generous, for a loaded 2-core machine. */
const BOUND_MS = 2 * TIMEOUT_MS + 1000;
/** /readyz and /metrics must answer well before that. */
const PROMPT_MS = 2000;
/** How long a hang lasts: longer than the bound, so an answer held for the whole hang would show. */
const HANG_MS = 5000;

interface Answer { what: string; status: number | 'error'; body: unknown; retryAfter: string | null; ms: number }

async function timed(what: string, url: string, init: RequestInit = {}): Promise<Answer> {
  const t0 = performance.now();
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(20_000) });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch { /* not JSON */ }
    return { what, status: res.status, body, retryAfter: res.headers.get('retry-after'), ms: performance.now() - t0 };
  } catch (err) {
    return { what, status: 'error', body: (err as Error).message, retryAfter: null, ms: performance.now() - t0 };
  }
}

const UNAVAILABLE = { error: 'temporarily_unavailable', error_description: expect.any(String) };

/** Asks, all at once, what a client, an operator and a probe ask; returns every answer. */
async function probe(url: string, agent: { id: string; authorization: string }, token: string, adminToken = FAULTS_ADMIN_TOKEN): Promise<Answer[]> {
  const form = (body: Record<string, string>) => ({
    method: 'POST', headers: { authorization: agent.authorization, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body).toString(),
  });
  const jwk = { ...(await exportJWK((await generateKeyPair('EdDSA', { extractable: true })).publicKey)), alg: 'EdDSA' };
  return Promise.all([
    timed('POST /token', `${url}/token`, form({ grant_type: 'client_credentials' })),
    timed('POST /token/introspection', `${url}/token/introspection`, form({ token })),
    timed('POST /token/revocation', `${url}/token/revocation`, form({ token })),
    timed('POST /wit', `${url}/wit`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ agent_id: agent.id, jwk, attestation: { type: 'join_token', token: 'x'.repeat(43) } }),
    }),
    timed('GET /admin/agents', `${url}/admin/agents`, { headers: { authorization: `Bearer ${adminToken}` } }),
    timed('GET /readyz', `${url}/readyz`),
    timed('GET /metrics', `${url}/metrics`),
  ]);
}

/** What must hold for the answers {@link probe} got while the database hung. */
function expectHungAnswers(answers: Answer[], phase: string): void {
  for (const a of answers) {
    const label = `${phase}: ${a.what}`;
    if (a.what === 'GET /metrics') {
      expect.soft(a.status, label).toBe(200);
      expect.soft(a.ms, label).toBeLessThan(PROMPT_MS);
    } else if (a.what === 'GET /readyz') {
      expect.soft(a.status, label).toBe(503);
      expect.soft(a.ms, label).toBeLessThan(PROMPT_MS);
    } else {
      expect.soft({ label, status: a.status, body: a.body }).toEqual({ label, status: 503, body: UNAVAILABLE });
      expect.soft(a.retryAfter, label).toBe('1');
      expect.soft(a.ms, label).toBeLessThan(BOUND_MS);
    }
  }
}

describe('PostgreSQL hanging under load', () => {
  let cluster: PgCluster | undefined;
  let proxy: TcpProxy | undefined;
  let server: ServerProcess | undefined;
  let load: Load | undefined;

  beforeAll(async () => {
    if (!PG_BIN) throw new Error('PostgreSQL server programs (initdb, pg_ctl) not found: install them (Debian: postgresql) or set PG_BIN');
    cluster = await PgCluster.create(PG_BIN);
    proxy = await TcpProxy.start(cluster.port);
    server = new ServerProcess(await freePort(), {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/postgres`,
      DATABASE_TIMEOUT_MS: String(TIMEOUT_MS),
    });
    await server.start();
  }, 60_000);

  afterAll(async () => {
    await load?.stop().catch(() => {});
    await server?.kill9().catch(() => {});
    await proxy?.close().catch(() => {});
    await cluster?.destroy();
  });

  it('answers 503 within the deadline while frozen or cut off, never a token without its record, drops the stuck connections, recovers, and shuts down in bounded time', async () => {
    const srv = server!;
    const db = cluster!;
    const px = proxy!;
    const agent = await srv.registerAgent('hang');
    load = new Load(srv.url, agent.authorization, 8, 20_000);
    expect(await load.waitFor((o) => o.status === 200, 0, 10_000), 'tokens are issued before the hang').toBeDefined();
    // Past the first requests' warm-up (the secret's first verification, first compilations), which can take seconds here.
    await sleep(2000);
    const token = load.outcomes.find((o) => o.status === 200)!.body!.access_token!;

    /** Hangs the database with `hang`, checks what is answered meanwhile, ends it with `end`; returns the window. */
    const hangPhase = async (phase: string, hang: () => void | Promise<void>, end: () => void | Promise<void>) => {
      const l = load!;
      await hang();
      const hungAt = l.now();
      const hungAtPerf = performance.now();
      await sleep(200);
      expectHungAnswers(await probe(srv.url, agent, token), phase);
      expect(await l.waitFor((o) => o.status === 503 && o.start >= hungAt, hungAt, BOUND_MS + 2000), `${phase}: a 503 from the load`).toBeDefined();
      await sleep(Math.max(0, HANG_MS - (l.now() - hungAt)));
      // No connection is left waiting on the hung database longer than the bound: each was closed, not kept.
      const now = performance.now();
      const stuck = px.connections.filter((c) => c.closedAt === undefined && c.waitingSince !== undefined && c.waitingSince >= hungAtPerf - 100 && now - c.waitingSince > BOUND_MS);
      expect.soft(stuck.map((c) => Math.round(now - c.waitingSince!)), `${phase}: connections left waiting`).toEqual([]);
      const endAt = l.now();
      await end();
      const recoveredAt = await l.waitFor((o) => o.status === 200 && o.start >= endAt, endAt, 15_000);
      expect(recoveredAt, `${phase}: tokens again within 15 s of the end of the hang`).toBeDefined();
      return { hungAt, endAt };
    };

    const frozen = await hangPhase('frozen', () => db.freeze(), () => db.thaw());
    await sleep(1000);
    const cut = await hangPhase('cut off', () => px.partition(), () => px.heal());
    await sleep(1000);
    const outcomes = await load.stop();
    load = undefined;

    const during = (w: { hungAt: number; endAt: number }) => outcomes.filter((o) => o.end >= w.hungAt && o.start <= w.endAt);
    console.log('database hang:', JSON.stringify({ all: summarize(outcomes), frozen: summarize(during(frozen)), cut: summarize(during(cut)) }),
      `slowest answer while frozen ${Math.round(Math.max(...during(frozen).map((o) => o.end - o.start)))} ms, cut off ${Math.round(Math.max(...during(cut).map((o) => o.end - o.start)))} ms;`,
      `connections closed after waiting: ${px.connections.filter((c) => c.closedAfterWaiting !== undefined && c.closedAfterWaiting > 200).map((c) => Math.round(c.closedAfterWaiting!)).join(', ')} ms`);

    for (const [phase, w] of [['frozen', frozen], ['cut off', cut]] as const) {
      const hung = during(w);
      // A token or a 503 temporarily_unavailable, nothing else (no 500, no dropped connection, no client timeout) ...
      const unexpected = hung.filter((o) => !(o.status === 200 || (o.status === 503 && o.body?.error === 'temporarily_unavailable')));
      expect(unexpected.slice(0, 5), `${phase}: ${unexpected.length} unexpected answers; server output:\n${srv.output.slice(-3000)}`).toEqual([]);
      // ... within the bound, never held for the length of the hang ...
      const slow = hung.filter((o) => o.end - o.start > BOUND_MS);
      expect(slow.map((o: Outcome) => ({ ms: Math.round(o.end - o.start), status: o.status, sentAfterHang: Math.round(o.start - w.hungAt) })), phase).toEqual([]);
      // ... and no token asked for while it hung.
      expect(hung.filter((o) => o.status === 200 && o.start >= w.hungAt + 50 && o.end <= w.endAt), phase).toEqual([]);
      expect(hung.filter((o) => o.status === 503).length, phase).toBeGreaterThan(5);
    }
    // Every connection agent-sts gave up on was closed by it within the bound.
    const late = px.connections.filter((c) => c.closedAfterWaiting !== undefined && c.closedAfterWaiting > BOUND_MS);
    expect(late.map((c) => Math.round(c.closedAfterWaiting!))).toEqual([]);

    // Every token a client received has its record, once.
    const jtis = outcomes.filter((o) => o.status === 200).map((o) => o.jti!);
    expect(new Set(jtis).size).toBe(jtis.length);
    const client = new pg.Client({ connectionString: db.url() });
    await client.connect();
    try {
      const { rows } = await client.query<{ jti: string }>('select jti from issued_tokens where jti = any($1)', [jtis]);
      const recorded = new Set(rows.map((r) => r.jti));
      expect(jtis.filter((j) => !recorded.has(j))).toEqual([]);
    } finally {
      await client.end();
    }
    expect((await fetch(`${srv.url}/readyz`)).status).toBe(200);

    // A graceful shutdown while the database is frozen, with a request waiting on it, ends in bounded time.
    await db.freeze();
    const waiting = timed('POST /token', `${srv.url}/token`, {
      method: 'POST', headers: { authorization: agent.authorization, 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=client_credentials',
    });
    await sleep(300);
    const t0 = performance.now();
    const code = await srv.stop(30_000);
    const stopMs = performance.now() - t0;
    await waiting;
    await db.thaw();
    console.log(`shutdown with the database frozen: ${Math.round(stopMs)} ms, exit code ${code}`);
    expect(code, srv.output.slice(-2000)).toBe(0);
    expect(stopMs).toBeLessThan(2 * TIMEOUT_MS + 3000);
  }, 90_000);
});

describe('group commit on a database that stopped answering', () => {
  let cluster: PgCluster | undefined;
  let proxy: TcpProxy | undefined;
  let db: Database | undefined;
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-hang-writer-'));

  beforeAll(async () => {
    if (!PG_BIN) throw new Error('PostgreSQL server programs (initdb, pg_ctl) not found: install them (Debian: postgresql) or set PG_BIN');
    cluster = await PgCluster.create(PG_BIN);
    proxy = await TcpProxy.start(cluster.port);
    db = await openDatabase({ databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/postgres`, dataDir, poolMax: 4, timeoutMs: 500 });
    await db.migrate();
  }, 60_000);
  afterAll(async () => {
    await db?.close().catch(() => {});
    await proxy?.close().catch(() => {});
    await cluster?.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('fails every waiting record within the deadline, not one deadline per record, and writes again once the path is back', async () => {
    const record = (jti: string): NewTokenRecord => ({
      jti, type: 'access_token', sub: 's', client_id: 'c', actor: null, parent_jti: null, txn: null, scope: null, audience: ['a'],
      kid: 'k', iat: 1, exp: 2, token_hash: 'h', cnf_jkt: null,
    });
    const issued = { action: 'token:test', client_id: 'c' };
    const writer = new RecordWriter(db!.knex, undefined, undefined, 500);
    expect(await writer.write(record('before'), issued)).toBe('written');

    proxy!.partition();
    const t0 = performance.now();
    // The first is sent alone and sticks; the other 19 wait behind it as the next batch.
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => writer.write(record(`cut-${i}`), issued)));
    const ms = performance.now() - t0;
    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as Error).name : r.value))).toEqual(Array(20).fill('DatabaseTimeoutError'));
    expect(ms).toBeLessThan(2 * 500 + 1000);

    proxy!.heal();
    let after: string | undefined;
    for (let i = 0; i < 20 && after !== 'written'; i++) {
      after = await writer.write(record(`after-${i}`), issued).catch(() => undefined);
      if (after !== 'written') await sleep(250);
    }
    expect(after).toBe('written');
    const client = new pg.Client({ connectionString: cluster!.url() });
    await client.connect();
    try {
      // Records queued behind the stuck batch and timed out there were never sent.
      const { rows } = await client.query<{ jti: string }>("select jti from issued_tokens where jti like 'cut-%'");
      expect(rows.map((r) => r.jti).filter((j) => j !== 'cut-0')).toEqual([]);
    } finally {
      await client.end();
    }
  }, 60_000);
});

describe('embedded database held by a long operation', () => {
  const D = 1000;
  let ts: TestServer | undefined;
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-hang-'));
  // The embedded database whatever DATABASE_URL says.
  const embedded = { dataDir, url: undefined, create: async () => {}, drop: async () => rmSync(dataDir, { recursive: true, force: true }) } as unknown as TestDatabase;

  beforeAll(async () => {
    ts = await startTestServer({ DATABASE_TIMEOUT_MS: String(D) }, embedded);
  }, 60_000);
  afterAll(async () => {
    await ts?.close();
  });

  it('answers 503 once a request has waited the deadline for the one connection; /readyz and /metrics answer promptly', async () => {
    const server = ts!;
    const agent = await registerSecretAgent(server, { id: agentId('embedded-hang'), scopes: ['tools:call'], audiences: ['https://tools.example/mcp'] });
    const first = await agent.token({ grant_type: 'client_credentials' });
    expect(first.status).toBe(200);

    // A transaction that holds PGlite's one connection (as a long operation would) for longer than the deadline.
    let held!: () => void;
    const holding = new Promise<void>((resolve) => {
      held = resolve;
    });
    const release = sleep(3 * D + 500);
    const hold = server.server.db.knex.transaction(async (trx) => {
      await trx.raw('select 1');
      held();
      await release;
    });
    await holding;
    const answers = await probe(server.url, { id: agent.id, authorization: agent.auth.authorization }, first.body.access_token as string, TEST_ADMIN_TOKEN);
    expectHungAnswers(answers, 'embedded');
    for (const a of answers) if (a.what !== 'GET /metrics' && a.what !== 'GET /readyz') expect.soft(a.ms, a.what).toBeLessThan(2 * D + 1000);
    await hold;
    expect((await agent.token({ grant_type: 'client_credentials' })).status).toBe(200);
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  }, 60_000);
});
