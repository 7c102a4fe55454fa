import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { tokenHash } from '../../src/tokens/token-hash.js';
import { findPgBin, freePort, Load, PgCluster, ServerProcess, sleep, summarize, type Outcome } from './support.js';

// kill -9 of `agent-sts serve` under load, then a restart on the same database: on a PostgreSQL cluster of
// the test's own and on the embedded database. Neither uses DATABASE_URL, so this runs the same either way.

const PG_BIN = findPgBin();

/** Loads the server with 8 clients, kills it with SIGKILL mid-load and returns what the clients received. */
async function killUnderLoad(server: ServerProcess, authorization: string): Promise<{ outcomes: Outcome[]; killedAt: number }> {
  const load = new Load(server.url, authorization, 8);
  try {
    expect(await load.waitFor((o) => o.status === 200, 0, 15_000), 'tokens are issued under load').toBeDefined();
    await sleep(1_500);
    const killedAt = load.now();
    await server.kill9();
    // The clients find the server gone.
    await load.waitFor((o) => o.status === 'error' && o.start > killedAt, killedAt, 5_000);
    return { outcomes: await load.stop(), killedAt };
  } finally {
    await load.stop();
  }
}

/** Every answer before the kill was a token; after it, only failed connections. */
function checkOutcomes(outcomes: Outcome[], killedAt: number): Outcome[] {
  const before = outcomes.filter((o) => o.end < killedAt);
  expect(before.filter((o) => o.status !== 200).map((o) => ({ status: o.status, body: o.body, error: o.error }))).toEqual([]);
  expect(outcomes.filter((o) => o.status !== 200 && o.status !== 'error').map((o) => ({ status: o.status, body: o.body }))).toEqual([]);
  const received = outcomes.filter((o) => o.status === 200);
  expect(received.length).toBeGreaterThan(10);
  const jtis = received.map((o) => o.jti!);
  expect(new Set(jtis).size, 'no jti handed out twice').toBe(jtis.length);
  return received;
}

/** A fresh client-credentials token, after the restart. */
async function tokenAfterRestart(server: ServerProcess, authorization: string): Promise<string> {
  const res = await fetch(`${server.url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization },
    body: 'grant_type=client_credentials',
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json()) as { access_token?: string };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body.access_token!;
}

/** The restarted server logged no error (pino level 50 and above) and no stack. */
function expectCleanStart(output: string) {
  const errors = output.split('\n').filter((line) => /"level":(50|60)/.test(line) || /^\s+at /.test(line));
  expect(errors).toEqual([]);
}

describe('kill -9 under load, PostgreSQL', () => {
  let cluster: PgCluster | undefined;
  const servers: ServerProcess[] = [];

  beforeAll(async () => {
    if (!PG_BIN) throw new Error('PostgreSQL server programs (initdb, pg_ctl) not found: install them (Debian: postgresql) or set PG_BIN');
    cluster = await PgCluster.create(PG_BIN);
  });

  afterAll(async () => {
    for (const s of servers) await s.kill9().catch(() => {});
    await cluster?.destroy();
  });

  it('restarts cleanly on the same database with a record of every token clients received', async () => {
    const db = cluster!;
    const port = await freePort();
    const env = { DATABASE_URL: db.url(), LOG_LEVEL: 'info' };
    const first = new ServerProcess(port, env);
    servers.push(first);
    await first.start();
    expect(first.output).toMatch(/migrations applied/);
    const agent = await first.registerAgent('killed-under-load');
    const jwksBefore = await (await fetch(`${first.url}/jwks`)).json() as { keys: { kid: string }[] };

    const sql = new pg.Client({ connectionString: db.url() });
    await sql.connect();
    try {
      const count = async (query: string) => Number((await sql.query<{ n: string }>(query)).rows[0]!.n);
      const migrationsBefore = await count('select count(*) as n from knex_migrations');
      const keysBefore = await count('select count(*) as n from signing_keys');

      const { outcomes, killedAt } = await killUnderLoad(first, agent.authorization);
      expect(first.running).toBe(false);
      const received = checkOutcomes(outcomes, killedAt);

      // Restart on the same database and port.
      const second = new ServerProcess(port, env);
      servers.push(second);
      const restart0 = performance.now();
      await second.start();
      const restartMs = performance.now() - restart0;
      expect(second.output).not.toMatch(/migrations applied/);
      expectCleanStart(second.output);
      expect(await count('select count(*) as n from knex_migrations')).toBe(migrationsBefore);
      expect(await count('select count(*) as n from signing_keys'), 'the stored keys are loaded, none generated').toBe(keysBefore);
      expect(await (await fetch(`${second.url}/jwks`)).json()).toEqual(jwksBefore);

      // Every token a client received before the kill has its record, for that exact token, with its issued event.
      const { rows } = await sql.query<{ jti: string; token_hash: string; issued: boolean }>(
        `select t.jti, t.token_hash, exists (select 1 from decision_events e where e.jti = t.jti and e.decision = 'issued') as issued
           from issued_tokens t where t.jti = any($1)`, [received.map((o) => o.jti!)]);
      const records = new Map(rows.map((r) => [r.jti, r]));
      const missing = received.filter((o) => records.get(o.jti!)?.token_hash !== tokenHash(o.body!.access_token!));
      expect(missing.map((o) => o.jti)).toEqual([]);
      expect(rows.filter((r) => !r.issued).map((r) => r.jti)).toEqual([]);
      expect((await sql.query('select jti, count(*) from issued_tokens group by jti having count(*) > 1')).rows).toEqual([]);
      const recordedTotal = await count('select count(*) as n from issued_tokens');

      // It serves again, signing with the keys it had.
      const fresh = await tokenAfterRestart(second, agent.authorization);
      expect(jwksBefore.keys.map((k) => k.kid)).toContain(decodeProtectedHeader(fresh).kid);
      expect((await sql.query('select 1 from issued_tokens where jti = $1', [decodeJwt(fresh).jti])).rowCount).toBe(1);
      console.log('kill -9 (PostgreSQL):', JSON.stringify(summarize(outcomes)), `${received.length} tokens received, ${recordedTotal} recorded; restart ready in ${Math.round(restartMs)} ms`);

      expect(await second.stop()).toBe(0);
    } finally {
      await sql.end();
    }
  }, 90_000);
});

describe('kill -9 under load, embedded database', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-kill-'));
  const servers: ServerProcess[] = [];

  afterAll(async () => {
    for (const s of servers) await s.kill9().catch(() => {});
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('takes over the dead process\'s data directory lock, opens the database and has every token\'s record', async () => {
    const port = await freePort();
    const env = { DATA_DIR: dataDir, LOG_LEVEL: 'info' };
    const lockFile = join(dataDir, 'agent-sts.lock');
    const first = new ServerProcess(port, env);
    servers.push(first);
    await first.start(90_000);
    const agent = await first.registerAgent('killed-under-load');
    const jwksBefore = await (await fetch(`${first.url}/jwks`)).json() as { keys: { kid: string }[] };
    expect(readFileSync(lockFile, 'utf8')).toBe(String(first.pid));

    const { outcomes, killedAt } = await killUnderLoad(first, agent.authorization);
    const received = checkOutcomes(outcomes, killedAt);
    // The dead process's lock is still there.
    expect(readFileSync(lockFile, 'utf8')).toBe(String(first.pid));

    const second = new ServerProcess(port, env);
    servers.push(second);
    const restart0 = performance.now();
    await second.start(90_000);
    const restartMs = performance.now() - restart0;
    expect(readFileSync(lockFile, 'utf8'), 'the lock is taken over').toBe(String(second.pid));
    expect(second.output).not.toMatch(/migrations applied/);
    expectCleanStart(second.output);
    expect(await (await fetch(`${second.url}/jwks`)).json()).toEqual(jwksBefore);

    const recorded = await second.recordedJtis();
    expect(new Set(recorded).size, 'no duplicate jti among the records').toBe(recorded.length);
    const have = new Set(recorded);
    expect(received.map((o) => o.jti!).filter((jti) => !have.has(jti))).toEqual([]);
    // Spot-check that the records are of these exact tokens.
    for (const o of [received[0]!, received[Math.floor(received.length / 2)]!, received.at(-1)!]) {
      expect((await second.admin('GET', `/admin/tokens/${o.jti}`)).body.token_hash).toBe(tokenHash(o.body!.access_token!));
    }

    const fresh = await tokenAfterRestart(second, agent.authorization);
    expect(jwksBefore.keys.map((k) => k.kid)).toContain(decodeProtectedHeader(fresh).kid);
    console.log('kill -9 (embedded):', JSON.stringify(summarize(outcomes)), `${received.length} tokens received, ${recorded.length} recorded; restart ready in ${Math.round(restartMs)} ms`);

    // A clean stop releases the lock.
    expect(await second.stop()).toBe(0);
    expect(existsSync(lockFile)).toBe(false);
  }, 120_000);
});
