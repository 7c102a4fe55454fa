import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { ADMIN_TOKEN, agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';

const API = 'https://api.example.com';
const sha256 = (s: string) => createHash('sha256').update(s).digest('base64url');

interface Line {
  kind: 'token' | 'decision';
  at: string;
  [k: string]: unknown;
}

async function audit(ts: TestServer, query = '', token = ADMIN_TOKEN): Promise<{ status: number; type: string | null; lines: Line[]; text: string; headers: Headers }> {
  const res = await fetch(`${ts.url}/admin/audit${query}`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.text();
  const lines = res.status === 200 ? text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line) : [];
  if (res.status === 200) expect(text === '' || text.endsWith('\n')).toBe(true);
  return { status: res.status, type: res.headers.get('content-type'), lines, text, headers: res.headers };
}

const jtiOf = (token: string) => decodeJwt(token).jti!;
const sleepUntil = async (ms: number) => {
  while (Date.now() <= ms) await new Promise((r) => setTimeout(r, Math.max(1, ms - Date.now() + 1)));
};

describe('GET /admin/audit', () => {
  let ts: TestServer;
  let alpha: SecretAgent;
  let beta: SecretAgent;
  const issued = {} as { a1: string; b1: string; t1: string };
  let txnId: string;
  let boundary: number;

  beforeAll(async () => {
    ts = await startTestServer();
    alpha = await registerSecretAgent(ts, { id: agentId('alpha'), scopes: ['read', 'write'], audiences: [API], grant_types: ['client_credentials', TOKEN_EXCHANGE] });
    beta = await registerSecretAgent(ts, { id: agentId('beta'), scopes: ['read'], audiences: [API] });

    issued.a1 = (await alpha.token({ grant_type: 'client_credentials', scope: 'read' })).body.access_token;
    expect((await alpha.token({ grant_type: 'client_credentials', scope: 'delete' })).body.error).toBe('invalid_scope');
    // Everything before this whole second is "before", everything after it "after".
    boundary = Math.ceil(Date.now() / 1000) * 1000;
    await sleepUntil(boundary);
    issued.b1 = (await beta.token({ grant_type: 'client_credentials' })).body.access_token;
    const txn = await exchange(alpha, { subject_token: issued.a1, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'read' });
    expect(txn.status, JSON.stringify(txn.body)).toBe(200);
    issued.t1 = txn.body.access_token;
    txnId = decodeJwt(issued.t1).txn as string;
    expect((await beta.token({ grant_type: 'client_credentials', scope: 'write' })).body.error).toBe('invalid_scope');
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('requires the admin token', async () => {
    const none = await fetch(`${ts.url}/admin/audit`);
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error: 'invalid_token' });
    expect((await audit(ts, '', 'not-the-admin-token-0123456789abcdef0123')).status).toBe(401);
  });

  it('streams every issued token and every decision as NDJSON in time order, without token values', async () => {
    const res = await audit(ts);
    expect(res.status).toBe(200);
    expect(res.type).toBe('application/x-ndjson');
    expect(res.headers.get('content-length')).toBeNull();
    expect(res.headers.get('cache-control')).toBe('no-store');

    const tokens = res.lines.filter((l) => l.kind === 'token');
    expect(tokens.map((t) => t.jti).sort()).toEqual(Object.values(issued).map(jtiOf).sort());
    for (const [name, value] of Object.entries(issued)) {
      const line = tokens.find((t) => t.jti === jtiOf(value))!;
      expect(line.token_hash, name).toBe(sha256(value));
      expect(line.at).toBe(new Date((line.iat as number) * 1000).toISOString());
    }
    expect(tokens.find((t) => t.jti === jtiOf(issued.t1))).toMatchObject({ type: 'txn_token', txn: txnId, parent_jti: jtiOf(issued.a1), sub: alpha.id });
    for (const value of [...Object.values(issued), alpha.secret, beta.secret, ADMIN_TOKEN]) expect(res.text).not.toContain(value);

    const decisions = res.lines.filter((l) => l.kind === 'decision');
    const refused = decisions.filter((d) => d.decision === 'refused');
    expect(refused.map((d) => [d.client_id, d.reason, d.action])).toEqual([
      [alpha.id, 'invalid_scope', 'token:client_credentials'],
      [beta.id, 'invalid_scope', 'token:client_credentials'],
    ]);
    expect(decisions.filter((d) => d.decision === 'issued').map((d) => d.jti).sort()).toEqual(Object.values(issued).map(jtiOf).sort());
    expect(decisions.filter((d) => d.decision === 'admin').map((d) => d.action)).toEqual(['agent.register', 'agent.register']);

    // Time order; each token before the event recording its issue.
    const times = res.lines.map((l) => Date.parse(l.at));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    for (const jti of Object.values(issued).map(jtiOf)) {
      const t = res.lines.findIndex((l) => l.kind === 'token' && l.jti === jti);
      const d = res.lines.findIndex((l) => l.kind === 'decision' && l.decision === 'issued' && l.jti === jti);
      expect(t).toBeGreaterThanOrEqual(0);
      expect(t).toBeLessThan(d);
    }
  });

  it('filters by kind, agent and txn', async () => {
    const onlyTokens = await audit(ts, '?kind=token');
    expect(onlyTokens.lines).toHaveLength(3);
    expect(new Set(onlyTokens.lines.map((l) => l.kind))).toEqual(new Set(['token']));
    const onlyDecisions = await audit(ts, '?kind=decision');
    expect(new Set(onlyDecisions.lines.map((l) => l.kind))).toEqual(new Set(['decision']));
    expect(onlyDecisions.lines).toHaveLength((await audit(ts)).lines.length - 3);

    const betaOnly = await audit(ts, `?agent=${encodeURIComponent(beta.id)}`);
    expect(betaOnly.lines.filter((l) => l.kind === 'token').map((l) => l.jti)).toEqual([jtiOf(issued.b1)]);
    expect(betaOnly.lines.filter((l) => l.kind === 'decision').map((l) => l.decision)).toEqual(['admin', 'issued', 'refused']);
    for (const l of betaOnly.lines) expect([l.client_id, l.sub]).toContain(beta.id);

    const inTxn = await audit(ts, `?txn=${encodeURIComponent(txnId)}`);
    expect(inTxn.lines.map((l) => [l.kind, l.jti])).toEqual([['token', jtiOf(issued.t1)], ['decision', jtiOf(issued.t1)]]);
    expect(inTxn.lines[1]).toMatchObject({ decision: 'issued', txn: txnId, sub: alpha.id });

    expect((await audit(ts, '?agent=spiffe%3A%2F%2Fagent-sts.test%2Fagents%2Fnobody')).lines).toEqual([]);
    expect((await audit(ts, `?agent=${encodeURIComponent(beta.id)}&kind=token&txn=${encodeURIComponent(txnId)}`)).lines).toEqual([]);
  });

  it('filters by time, since inclusive and until exclusive, in RFC 3339 or epoch seconds', async () => {
    const all = await audit(ts);
    const after = await audit(ts, `?since=${boundary / 1000}`);
    const before = await audit(ts, `?until=${encodeURIComponent(new Date(boundary).toISOString())}`);
    expect(after.lines.length + before.lines.length).toBe(all.lines.length);
    expect(before.lines.filter((l) => l.kind === 'token').map((l) => l.jti)).toEqual([jtiOf(issued.a1)]);
    expect(after.lines.filter((l) => l.kind === 'token').map((l) => l.jti).sort()).toEqual([jtiOf(issued.b1), jtiOf(issued.t1)].sort());
    for (const l of after.lines) expect(Date.parse(l.at)).toBeGreaterThanOrEqual(boundary);
    for (const l of before.lines) expect(Date.parse(l.at)).toBeLessThan(boundary);
    // An offset other than Z names the same instant.
    const offset = new Date(boundary + 2 * 3600_000).toISOString().replace(/\.\d+Z$/, '+02:00');
    expect((await audit(ts, `?since=${encodeURIComponent(offset)}`)).lines).toEqual(after.lines);
    expect((await audit(ts, `?since=${boundary / 1000}&until=${boundary / 1000}`)).lines).toEqual([]);
    expect((await audit(ts, '?until=0')).lines).toEqual([]);
  });

  it('refuses bad filters with a 400 JSON error', async () => {
    for (const query of ['since=yesterday', 'since=2026-02-30T00:00:00Z', 'until=2026-01-01T25:00:00Z', 'since=2026-01-01', 'since=-5', 'until=1e9',
      'kind=tokens', 'kind=', 'agent=', `txn=${'x'.repeat(3000)}`, 'since=20&until=10', 'jti=abc', 'since=1&since=2']) {
      const res = await fetch(`${ts.url}/admin/audit?${query}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(res.status, query).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const body = await res.json() as { error: string; error_description: string };
      expect(body.error, query).toBe('invalid_request');
      expect(body.error_description.length).toBeGreaterThan(0);
    }
  });
});
