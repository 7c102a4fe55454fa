import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';
import { parsePrometheus, sampleValue, type Sample } from '../support/prometheus.js';
import { BISCUIT_INSTANCE_MAX_BYTES } from '../../src/tokens/biscuit-wasm.js';

const API = 'https://api.example.com';

async function scrape(url: string, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await fetch(`${url}/metrics`, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text()).samples;
}

describe('GET /metrics', () => {
  let ts: TestServer;
  let agent: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    agent = await registerSecretAgent(ts, {
      id: agentId('metered'), scopes: ['read', 'write'], audiences: [API], grant_types: ['client_credentials', TOKEN_EXCHANGE],
    });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('serves parseable exposition text with HELP and TYPE for every metric, without the admin token', async () => {
    const res = await fetch(`${ts.url}/metrics`);
    expect(res.status).toBe(200);
    const { samples, help, types } = parsePrometheus(await res.text());
    for (const name of ['agent_sts_tokens_issued_total', 'agent_sts_refusals_total', 'agent_sts_http_request_duration_seconds',
      'agent_sts_db_pool_used_connections', 'agent_sts_db_pool_free_connections', 'agent_sts_db_pool_pending_acquires',
      'agent_sts_db_pool_max_connections', 'agent_sts_outbox_backlog', 'agent_sts_biscuit_wasm_memory_bytes', 'agent_sts_biscuit_wasm_instance',
      'process_cpu_user_seconds_total']) {
      expect(help.get(name), name).toBeTruthy();
      expect(types.get(name), name).toBeTruthy();
    }
    expect(types.get('agent_sts_tokens_issued_total')).toBe('counter');
    expect(types.get('agent_sts_http_request_duration_seconds')).toBe('histogram');
    expect(help.get('agent_sts_outbox_backlog')).toMatch(/outbox/);
    expect(sampleValue(samples, 'agent_sts_outbox_backlog')).toBe(0);
    const kind = ts.config.databaseUrl ? 'postgres' : 'embedded';
    expect(sampleValue(samples, 'agent_sts_db_info', { kind })).toBe(1);
    expect(sampleValue(samples, 'agent_sts_db_pool_max_connections')).toBe(ts.config.databaseUrl ? ts.config.databasePoolMax : 1);
    expect(sampleValue(samples, 'agent_sts_db_pool_pending_acquires')).toBeGreaterThanOrEqual(0);
    // The server loads Biscuit support as it starts.
    expect(sampleValue(samples, 'agent_sts_biscuit_wasm_instance')).toBeGreaterThanOrEqual(1);
    expect(sampleValue(samples, 'agent_sts_biscuit_wasm_memory_bytes')).toBeGreaterThan(0);
    expect(sampleValue(samples, 'agent_sts_biscuit_wasm_memory_bytes')).toBeLessThanOrEqual(BISCUIT_INSTANCE_MAX_BYTES + 8 * 1024 * 1024);
  });

  it('counts issued tokens by type once their records are committed', async () => {
    const before = await scrape(ts.url);
    const t1 = await agent.token({ grant_type: 'client_credentials', scope: 'read' });
    const t2 = await agent.token({ grant_type: 'client_credentials' });
    expect(t1.status).toBe(200);
    expect(t2.status).toBe(200);
    const txn = await exchange(agent, { subject_token: t1.body.access_token, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'read' });
    expect(txn.status, JSON.stringify(txn.body)).toBe(200);
    const after = await scrape(ts.url);
    const delta = (type: string) => sampleValue(after, 'agent_sts_tokens_issued_total', { type }) - sampleValue(before, 'agent_sts_tokens_issued_total', { type });
    expect(delta('access_token')).toBe(2);
    expect(delta('txn_token')).toBe(1);
    // The records agree.
    const listed = await ts.admin('GET', `/admin/tokens?client_id=${encodeURIComponent(agent.id)}`);
    expect(listed.body.tokens.filter((t: { type: string }) => t.type === 'access_token')).toHaveLength(sampleValue(after, 'agent_sts_tokens_issued_total', { type: 'access_token' }));
  });

  it('counts refusals by action and reason, with client-chosen values folded into `other`', async () => {
    const before = await scrape(ts.url);
    const refusals = (samples: Sample[], action: string, reason: string) => sampleValue(samples, 'agent_sts_refusals_total', { action, reason });
    expect((await agent.token({ grant_type: 'client_credentials', scope: 'admin' })).body.error).toBe('invalid_scope');
    expect((await agent.token({ grant_type: 'client_credentials', scope: 'delete' })).body.error).toBe('invalid_scope');
    expect((await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(agent.id, 'wrong') })).body.error).toBe('invalid_client');
    for (const g of ['password', 'made-up-1', 'made-up-2']) {
      expect((await agent.token({ grant_type: g })).body.error).toBe('unsupported_grant_type');
    }
    const wit = await fetch(`${ts.url}/wit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"agent_id": 1}' });
    expect(wit.status).toBe(400);

    const after = await scrape(ts.url);
    const delta = (action: string, reason: string) => refusals(after, action, reason) - refusals(before, action, reason);
    expect(delta('token:client_credentials', 'invalid_scope')).toBe(2);
    expect(delta('token:client_credentials', 'invalid_client')).toBe(1);
    expect(delta('token:other', 'unsupported_grant_type')).toBe(3);
    expect(delta('wit', 'invalid_request')).toBe(1);
    const actions = new Set(after.filter((s) => s.name === 'agent_sts_refusals_total').map((s) => s.labels.action));
    for (const a of actions) expect(a).not.toMatch(/made-up|password/);
    // No secret, token or agent id in any label.
    const text = await (await fetch(`${ts.url}/metrics`)).text();
    for (const secret of [agent.secret, ADMIN_TOKEN, agent.id, 'wrong']) expect(text).not.toContain(secret);
  });

  it('times requests per route pattern, method and status class, never the raw path', async () => {
    const id = encodeURIComponent(agent.id);
    expect((await ts.admin('GET', `/admin/agents/${id}`)).status).toBe(200);
    expect((await ts.admin('GET', `/admin/agents/${encodeURIComponent(agentId('nobody'))}`)).status).toBe(404);
    expect((await fetch(`${ts.url}/admin/agents/${id}`)).status).toBe(401);
    expect((await fetch(`${ts.url}/no/such/path/123`)).status).toBe(404);
    const samples = await scrape(ts.url);
    const count = (labels: Record<string, string>) => sampleValue(samples, 'agent_sts_http_request_duration_seconds_count', labels);
    expect(count({ route: '/admin/agents/:id', method: 'GET', status_class: '2xx' })).toBe(1);
    expect(count({ route: '/admin/agents/:id', method: 'GET', status_class: '4xx' })).toBe(2);
    // The tests above: three tokens issued, six refused.
    expect(count({ route: '/token', method: 'POST', status_class: '2xx' })).toBe(3);
    expect(count({ route: '/token', method: 'POST', status_class: '4xx' })).toBe(6);
    expect(count({ route: 'unmatched', method: 'GET', status_class: '4xx' })).toBe(1);
    const buckets = samples.filter((s) => s.name === 'agent_sts_http_request_duration_seconds_bucket' && s.labels.route === '/admin/agents/:id' && s.labels.status_class === '2xx');
    expect(buckets.map((b) => b.labels.le)).toContain('+Inf');
    expect(buckets.find((b) => b.labels.le === '+Inf')!.value).toBe(1);
    const routes = new Set(samples.filter((s) => s.name.startsWith('agent_sts_http_request_duration_seconds')).map((s) => s.labels.route));
    for (const r of routes) expect(r).not.toMatch(/spiffe|no\/such|123/);
    expect(sampleValue(samples, 'agent_sts_http_request_duration_seconds_sum', { route: '/admin/agents/:id', method: 'GET', status_class: '2xx' })).toBeGreaterThan(0);
  });
});

describe('GET /metrics with METRICS_TOKEN', () => {
  const METRICS_TOKEN = 'metrics-token-0123456789abcdef0123456789';
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer({ METRICS_TOKEN });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('refuses a scrape without the token or with another one, including the admin token', async () => {
    const none = await fetch(`${ts.url}/metrics`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect(await none.json()).toMatchObject({ error: 'invalid_token' });
    for (const t of ['nope', ADMIN_TOKEN]) {
      const res = await fetch(`${ts.url}/metrics`, { headers: { authorization: `Bearer ${t}` } });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('invalid_token');
    }
    const samples = await scrape(ts.url, { authorization: `Bearer ${METRICS_TOKEN}` });
    expect(samples.some((s) => s.name === 'agent_sts_outbox_backlog')).toBe(true);
  });
});

describe('METRICS_ENABLED=false', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer({ METRICS_ENABLED: 'false' });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('has no /metrics route', async () => {
    const res = await fetch(`${ts.url}/metrics`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: 'not_found' });
  });
});
