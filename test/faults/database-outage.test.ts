import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { exportJWK, generateKeyPair } from 'jose';
import { ADMIN_TOKEN, findPgBin, freePort, Load, PgCluster, ServerProcess, sleep, summarize, type Outcome } from './support.js';

// The test runs its own PostgreSQL cluster (not DATABASE_URL's), so it can stop the database under the server.
const PG_BIN = findPgBin();

/** How long any answer may take while the database is down (the server must fail fast, not hang). */
const MAX_ANSWER_MS = 2_500;
/** How long the server may take to serve again once the database is back. */
const RECOVERY_MS = 15_000;

async function timed(request: () => Promise<Response>): Promise<{ status: number; body: unknown; retryAfter: string | null; ms: number }> {
  const t0 = performance.now();
  const res = await request();
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, body, retryAfter: res.headers.get('retry-after'), ms: performance.now() - t0 };
}

describe('database stopped under load', () => {
  let cluster: PgCluster | undefined;
  let server: ServerProcess | undefined;
  let load: Load | undefined;

  beforeAll(async () => {
    if (!PG_BIN) throw new Error('PostgreSQL server programs (initdb, pg_ctl) not found: install them (Debian: postgresql) or set PG_BIN');
    cluster = await PgCluster.create(PG_BIN);
    server = new ServerProcess(await freePort(), { DATABASE_URL: cluster.url() });
    await server.start();
  });

  afterAll(async () => {
    await load?.stop().catch(() => {});
    await server?.kill9().catch(() => {});
    await cluster?.destroy();
  });

  it('answers 503 temporarily_unavailable at once, issues no token without its record, and recovers by itself', async () => {
    const srv = server!;
    const db = cluster!;
    const agent = await srv.registerAgent('under-load');

    load = new Load(srv.url, agent.authorization, 8);
    expect(await load.waitFor((o) => o.status === 200, 0, 10_000), 'tokens are issued before the outage').toBeDefined();
    await sleep(1_000);

    const stopAt = load.now();
    await db.stopImmediate();
    const downAt = load.now();

    // While the database is down: the admin API and readiness say so, quickly.
    // While the database is down: the admin API, introspection and readiness say so, quickly.
    const agentJwk = { ...(await exportJWK((await generateKeyPair('EdDSA', { extractable: true })).publicKey)), alg: 'EdDSA' };
    const token = load.outcomes.find((o) => o.status === 200)!.body!.access_token!;
    const answers = {
      'GET /admin/agents': await timed(() => fetch(`${srv.url}/admin/agents`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal: AbortSignal.timeout(10_000) })),
      'POST /admin/agents': await timed(() => fetch(`${srv.url}/admin/agents`, {
        method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: 'spiffe://agent-sts.test/agents/during-outage', audiences: ['https://tools.example/mcp'] }), signal: AbortSignal.timeout(10_000),
      })),
      'POST /wit': await timed(() => fetch(`${srv.url}/wit`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ agent_id: agent.id, jwk: agentJwk, attestation: { type: 'join_token', token: 'x'.repeat(43) } }), signal: AbortSignal.timeout(10_000),
      })),
      'POST /token/introspection': await timed(() => fetch(`${srv.url}/token/introspection`, {
        method: 'POST', headers: { authorization: agent.authorization, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }).toString(), signal: AbortSignal.timeout(10_000),
      })),
    };
    // Verifiers still get the keys last read, with a short cache lifetime.
    const jwks = await fetch(`${srv.url}/jwks`, { signal: AbortSignal.timeout(10_000) });
    expect.soft(jwks.status).toBe(200);
    expect.soft(jwks.headers.get('cache-control')).toBe('public, max-age=5');
    expect.soft(((await jwks.json()) as { keys: unknown[] }).keys.length).toBeGreaterThan(0);
    for (const [what, answer] of Object.entries(answers)) {
      expect.soft({ what, status: answer.status, body: answer.body }).toEqual({ what, status: 503, body: { error: 'temporarily_unavailable', error_description: expect.any(String) } });
      expect.soft(answer.retryAfter, what).toBe('1');
      expect.soft(answer.ms, what).toBeLessThan(MAX_ANSWER_MS);
    }
    const ready = await timed(() => fetch(`${srv.url}/readyz`, { signal: AbortSignal.timeout(10_000) }));
    expect.soft(ready.status).toBe(503);
    expect.soft(ready.ms).toBeLessThan(MAX_ANSWER_MS);

    expect(await load.waitFor((o) => o.status === 503 && o.start >= downAt, downAt, 10_000), 'a 503 during the outage').toBeDefined();
    await sleep(3_000);

    const startAt = load.now();
    await db.start();
    const upAt = load.now();
    const recoveredAt = await load.waitFor((o) => o.status === 200 && o.start >= upAt, upAt, RECOVERY_MS);
    // Keep the load on a little after recovery, then stop.
    await sleep(1_000);
    const outcomes = await load.stop();
    load = undefined;

    const summary = { all: summarize(outcomes), outage: summarize(outcomes.filter((o) => o.end >= stopAt && o.start <= upAt)) };
    const slowest = Math.max(...outcomes.filter((o) => o.end >= stopAt && o.start <= upAt).map((o) => o.end - o.start));
    console.log('database outage:', JSON.stringify(summary), `slowest answer during the outage ${Math.round(slowest)} ms; stop ${Math.round(downAt - stopAt)} ms, start ${Math.round(upAt - startAt)} ms, recovered ${recoveredAt === undefined ? 'never' : `${Math.round(recoveredAt - upAt)} ms after start`}`);

    // Every answer is a token or a 503 temporarily_unavailable: no 500, no dropped connection, no other error.
    const unexpected = outcomes.filter((o) => !(o.status === 200 || (o.status === 503 && o.body?.error === 'temporarily_unavailable')));
    expect(unexpected.slice(0, 5), `${unexpected.length} unexpected answers; server output:\n${srv.output.slice(-3000)}`).toEqual([]);
    // While the database was down (from the end of pg_ctl stop to the start of pg_ctl start) nothing was issued.
    const issuedWhileDown = outcomes.filter((o) => o.status === 200 && o.start >= downAt && o.end <= startAt);
    expect(issuedWhileDown).toEqual([]);
    // Answered quickly, never held until the client gives up.
    const slow = outcomes.filter((o) => o.end >= stopAt && o.start <= upAt).filter((o) => o.end - o.start > MAX_ANSWER_MS);
    expect(slow.map((o: Outcome) => ({ ms: Math.round(o.end - o.start), status: o.status }))).toEqual([]);
    expect(outcomes.filter((o) => o.status === 503 && o.start >= downAt && o.end <= startAt).length).toBeGreaterThan(10);
    // Service came back without a restart.
    expect(recoveredAt, `no token within ${RECOVERY_MS} ms of the database starting again`).toBeDefined();
    expect(srv.running).toBe(true);

    // Every token a client received has its record, once.
    const jtis = outcomes.filter((o) => o.status === 200).map((o) => o.jti!);
    expect(new Set(jtis).size).toBe(jtis.length);
    const client = new pg.Client({ connectionString: db.url() });
    await client.connect();
    try {
      const { rows } = await client.query<{ jti: string }>('select jti from issued_tokens where jti = any($1)', [jtis]);
      const recorded = new Set(rows.map((r) => r.jti));
      expect(jtis.filter((j) => !recorded.has(j))).toEqual([]);
      const dupes = await client.query('select jti, count(*) from issued_tokens group by jti having count(*) > 1');
      expect(dupes.rows).toEqual([]);
    } finally {
      await client.end();
    }

    // The admin API serves again too, and nothing was half-registered during the outage.
    expect((await srv.admin('GET', '/admin/agents')).body.agents.map((a: { id: string }) => a.id)).toEqual([agent.id]);
    expect((await fetch(`${srv.url}/readyz`)).status).toBe(200);
  }, 90_000);
});
