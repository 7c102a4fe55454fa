import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { agentId, enc, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';
import { postForm } from '../support/oauth-client.js';
import { newAgentKey, tokenWithWit, witByJoinToken } from '../support/workload.js';
import { computeAgentChecksum } from '../../src/identity/agent-checksum.js';

const API = 'https://orders.example/api';
const GRANTS = ['client_credentials', TOKEN_EXCHANGE];

describe('intent-bound tokens: workflow steps in a transaction', () => {
  let ts: TestServer;
  let reader: SecretAgent;
  let checker: SecretAgent;
  let writer: SecretAgent;
  let jwks: ReturnType<typeof createRemoteJWKSet>;

  const step = (agent: SecretAgent, form: Record<string, string>) => agent.token({ grant_type: 'client_credentials', ...form });
  const hop = (agent: SecretAgent, subject: string, form: Record<string, string>) => exchange(agent, { subject_token: subject, subject_token_type: AT, ...form });
  const refusals = async (txn: string, workflow = 'orders') => (await ts.admin('GET', `/admin/workflows/${workflow}/runs/${enc(txn)}`)).body.refusals as { reason: string; detail: string; client_id: string }[];

  beforeAll(async () => {
    ts = await startTestServer();
    jwks = createRemoteJWKSet(new URL(`${ts.url}/jwks`));
    reader = await registerSecretAgent(ts, { id: agentId('reader'), scopes: ['orders:read', 'orders:write', 'notify:send', 'orders:delete'], audiences: [API] });
    checker = await registerSecretAgent(ts, {
      id: agentId('checker'), grant_types: GRANTS, scopes: ['orders:read', 'orders:write', 'notify:send'], audiences: [API], token_exchange: { may_act_for_others: true },
    });
    writer = await registerSecretAgent(ts, {
      id: agentId('writer'), grant_types: GRANTS, scopes: ['orders:write'], audiences: [API], token_exchange: { may_act_for_others: true },
    });
    const created = await ts.admin('POST', '/admin/workflows', {
      id: 'orders', version: 1,
      steps: [
        { id: 'fetch', agent: reader.id, tool: 'orders.read', scopes: ['orders:read', 'orders:write', 'notify:send'] },
        { id: 'check', agent: checker.id, tool: 'orders.check', scopes: ['orders:read', 'orders:write', 'notify:send'], depends_on: ['fetch'] },
        { id: 'update', agent: writer.id, tool: 'orders.update', scopes: ['orders:write'], depends_on: ['check'] },
        { id: 'notify', agent: checker.id, tool: 'notify.send', scopes: ['notify:send'], depends_on: ['check', 'update'], repeatable: true },
      ],
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect((await ts.admin('POST', '/admin/workflows', {
      id: 'refund', version: 1,
      steps: [
        { id: 'fetch', agent: reader.id, tool: 'orders.read', scopes: ['orders:read'] },
        { id: 'approve', agent: writer.id, tool: 'refund.approve', scopes: ['orders:write'], depends_on: ['fetch'], approval: true },
      ],
    })).status).toBe(201);
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('runs a four-step workflow with three agents in order, every token carrying intent and the same txn', async () => {
    const t1 = await step(reader, { workflow_id: 'orders', workflow_step: 'fetch', resource: API });
    expect(t1.status, JSON.stringify(t1.body)).toBe(200);
    expect(t1.body.scope).toBe('orders:read orders:write notify:send');
    const { payload: p1 } = await jwtVerify(t1.body.access_token, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
    const txn = p1.txn as string;
    expect(txn).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(p1.intent).toEqual({ workflow_id: 'orders', workflow_version: 1, workflow_step: 'fetch', executed_by: reader.id });
    const introspected = await postForm(`${ts.url}/token/introspection`, { token: t1.body.access_token }, reader.auth);
    expect(introspected.body).toMatchObject({ active: true, txn, intent: p1.intent });

    const t2 = await hop(checker, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'check' });
    expect(t2.status, JSON.stringify(t2.body)).toBe(200);
    const { payload: p2 } = await jwtVerify(t2.body.access_token, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
    expect(p2).toMatchObject({ txn, sub: reader.id, client_id: checker.id, intent: { workflow_id: 'orders', workflow_version: 1, workflow_step: 'check', executed_by: checker.id } });

    const t3 = await hop(writer, t2.body.access_token, { workflow_id: 'orders', workflow_step: 'update', workflow_version: '1', txn });
    expect(t3.status, JSON.stringify(t3.body)).toBe(200);
    const { payload: p3 } = await jwtVerify(t3.body.access_token, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
    expect(p3).toMatchObject({ txn, scope: 'orders:write', intent: { workflow_step: 'update', executed_by: writer.id } });

    const t4 = await hop(checker, t2.body.access_token, { workflow_id: 'orders', workflow_step: 'notify' });
    expect(t4.status, JSON.stringify(t4.body)).toBe(200);
    const { payload: p4 } = await jwtVerify(t4.body.access_token, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
    expect(p4).toMatchObject({ txn, scope: 'notify:send', intent: { workflow_step: 'notify', executed_by: checker.id } });
    // A repeatable step runs again.
    expect((await hop(checker, t2.body.access_token, { workflow_id: 'orders', workflow_step: 'notify' })).status).toBe(200);

    // A step that is not repeatable does not run twice.
    const replay = await hop(checker, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'check' });
    expect(replay.status).toBe(400);
    expect(replay.body).toMatchObject({ error: 'invalid_request', error_description: `step check has already run in transaction ${txn} and is not repeatable` });

    // The records carry the step; the run shows every step with who ran it, and the refusal.
    const records = (await ts.admin('GET', `/admin/tokens?txn=${enc(txn)}`)).body.tokens as { workflow_step: string; workflow_id: string }[];
    expect(records.map((r) => r.workflow_step).sort()).toEqual(['check', 'fetch', 'notify', 'notify', 'update']);
    const run = await ts.admin('GET', `/admin/workflows/orders/runs/${enc(txn)}`);
    expect(run.status).toBe(200);
    expect(run.body).toMatchObject({ workflow_id: 'orders', workflow_version: 1, txn });
    const steps = run.body.steps as { id: string; status: string; issued: { client_id: string; jti: string; iat: number }[] }[];
    expect(steps.map((s) => [s.id, s.status, s.issued.length])).toEqual([['fetch', 'issued', 1], ['check', 'issued', 1], ['update', 'issued', 1], ['notify', 'issued', 2]]);
    expect(steps[0]!.issued[0]).toMatchObject({ client_id: reader.id, jti: p1.jti, iat: p1.iat });
    expect(steps[2]!.issued[0]).toMatchObject({ client_id: writer.id, jti: p3.jti });
    expect(run.body.refusals).toEqual([expect.objectContaining({ decision: 'refused', client_id: checker.id, reason: 'invalid_request', detail: expect.stringContaining('already run') })]);
  });

  it('refuses a step before its dependencies, and a step by the wrong agent, and records why', async () => {
    const t1 = await step(reader, { workflow_id: 'orders', workflow_step: 'fetch' });
    const txn = decodeJwt(t1.body.access_token).txn as string;
    const early = await hop(writer, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'update' });
    expect(early.status).toBe(400);
    expect(early.body).toEqual({ error: 'invalid_request', error_description: `step update depends on check, which has not run in transaction ${txn}` });
    const wrong = await hop(writer, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'check', scope: 'orders:write' });
    expect(wrong.status).toBe(400);
    expect(wrong.body).toEqual({ error: 'unauthorized_client', error_description: `step check of workflow orders is run by ${checker.id}, not by this agent` });
    const byCc = await step(writer, { workflow_id: 'orders', workflow_step: 'fetch' });
    expect(byCc.body.error).toBe('unauthorized_client');
    const recorded = await refusals(txn);
    expect(recorded.map((e) => [e.reason, e.client_id])).toEqual([['invalid_request', writer.id], ['unauthorized_client', writer.id]]);
    expect(recorded[0]!.detail).toContain('depends on check');
    const events = (await ts.admin('GET', `/admin/events?decision=refused&client_id=${enc(writer.id)}`)).body.events as { detail: string; workflow_id: string }[];
    expect(events[0]).toMatchObject({ workflow_id: 'orders', detail: expect.stringContaining('is run by') });
  });

  it('refuses scopes beyond the step', async () => {
    const cc = await step(reader, { workflow_id: 'orders', workflow_step: 'fetch', scope: 'orders:read orders:delete' });
    expect(cc.status).toBe(400);
    expect(cc.body).toMatchObject({ error: 'invalid_scope', error_description: 'scope beyond workflow step fetch: orders:delete' });
    const t1 = await step(reader, { workflow_id: 'orders', workflow_step: 'fetch' });
    const txn = decodeJwt(t1.body.access_token).txn as string;
    const t2 = await hop(checker, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'check', scope: 'orders:read' });
    expect(t2.status).toBe(200);
    const wide = await hop(writer, t2.body.access_token, { workflow_id: 'orders', workflow_step: 'update', scope: 'orders:read' });
    expect(wide.body).toMatchObject({ error: 'invalid_scope', error_description: 'scope beyond workflow step update: orders:read' });
    expect((await refusals(txn)).map((e) => e.reason)).toEqual(['invalid_scope']);
  });

  it('refuses a step of another transaction', async () => {
    const t1 = await step(reader, { workflow_id: 'orders', workflow_step: 'fetch' });
    const txnA = decodeJwt(t1.body.access_token).txn as string;
    const other = 'another-transaction-0001';
    const byCc = await step(checker, { workflow_id: 'orders', workflow_step: 'check', txn: other });
    expect(byCc.status).toBe(400);
    expect(byCc.body).toEqual({ error: 'invalid_request', error_description: `step check depends on fetch, which has not run in transaction ${other}` });
    const mixed = await hop(checker, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'check', txn: other });
    expect(mixed.body).toEqual({ error: 'invalid_request', error_description: `txn ${other} is not the subject token's transaction (${txnA})` });
    const noTxn = await step(checker, { workflow_id: 'orders', workflow_step: 'check' });
    expect(noTxn.body).toEqual({ error: 'invalid_request', error_description: 'txn is required: step check depends on fetch' });
    expect((await refusals(other)).map((e) => e.detail)).toEqual([expect.stringContaining('has not run in transaction')]);
  });

  it('refuses an approval-gated step, unknown workflows, versions and steps, and workflow parameters without a workflow', async () => {
    const t1 = await step(reader, { workflow_id: 'refund', workflow_step: 'fetch' });
    expect(t1.status).toBe(200);
    const gated = await hop(writer, t1.body.access_token, { workflow_id: 'refund', workflow_step: 'approve' });
    expect(gated.body).toEqual({
      error: 'invalid_request',
      error_description: 'step approve of workflow refund needs human approval: ask for it with a CIBA backchannel authentication request, then poll with grant_type urn:openid:params:grant-type:ciba',
    });
    expect((await refusals(decodeJwt(t1.body.access_token).txn as string, 'refund')).map((e) => e.detail)).toEqual([expect.stringContaining('human approval')]);

    expect((await step(reader, { workflow_id: 'nope', workflow_step: 'fetch' })).body).toEqual({ error: 'invalid_request', error_description: 'workflow nope is not registered' });
    expect((await step(reader, { workflow_id: 'orders', workflow_step: 'fetch', workflow_version: '7' })).body).toEqual({ error: 'invalid_request', error_description: 'workflow orders has no version 7' });
    expect((await step(reader, { workflow_id: 'orders', workflow_step: 'ship' })).body).toEqual({ error: 'invalid_request', error_description: 'workflow orders version 1 has no step "ship"' });
    expect((await step(reader, { workflow_id: 'orders', workflow_step: 'fetch', workflow_version: 'x' })).body.error).toBe('invalid_request');
    expect((await step(reader, { workflow_id: 'orders' })).body).toEqual({ error: 'invalid_request', error_description: 'workflow_step is required with workflow_id' });
    expect((await step(reader, { workflow_step: 'fetch' })).body).toEqual({ error: 'invalid_request', error_description: 'workflow_step given without workflow_id' });
    const txnToken = await hop(checker, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'check', requested_token_type: TXN, audience: 'agent-sts.test' });
    expect(txnToken.body.error).toBe('invalid_request');
    const events = (await ts.admin('GET', `/admin/events?decision=refused&client_id=${enc(reader.id)}`)).body.events as { detail: string }[];
    expect(events.map((e) => e.detail)).toEqual(expect.arrayContaining(['workflow nope is not registered', 'workflow orders has no version 7']));
  });

  it('issues a non-repeatable step once when five requests race for it', async () => {
    const t1 = await step(reader, { workflow_id: 'orders', workflow_step: 'fetch' });
    const txn = decodeJwt(t1.body.access_token).txn as string;
    const results = await Promise.all(Array.from({ length: 5 }, () => hop(checker, t1.body.access_token, { workflow_id: 'orders', workflow_step: 'check' })));
    expect(results.map((r) => r.status).sort()).toEqual([200, 400, 400, 400, 400]);
    for (const r of results.filter((x) => x.status === 400)) expect(r.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('already run') });
    const run = await ts.admin('GET', `/admin/workflows/orders/runs/${enc(txn)}`);
    expect(run.body.steps[1]).toMatchObject({ id: 'check', status: 'issued', issued: [expect.objectContaining({ client_id: checker.id })] });
    expect(run.body.steps[2]).toMatchObject({ id: 'update', status: 'not_issued', issued: [] });
    expect(run.body.refusals).toHaveLength(4);
  });

  it('refuses a listed agent that presents no checksum', async () => {
    const checksum = computeAgentChecksum({ prompt: 'You read orders.', tools: [{ name: 'orders.read' }] });
    const plain = await registerSecretAgent(ts, { id: agentId('unpinned'), scopes: ['orders:read'], audiences: [API] });
    expect((await ts.admin('POST', '/admin/workflows', {
      id: 'listed', version: 1, steps: [{ id: 'read', agent: plain.id, tool: 'orders.read', scopes: ['orders:read'] }], agent_checksums: { [plain.id]: [checksum] },
    })).status).toBe(201);
    const res = await step(plain, { workflow_id: 'listed', workflow_step: 'read', txn: 'listed-txn-1' });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({
      error: 'unauthorized_client',
      error_description: 'workflow listed requires this agent to present an agent checksum (authenticate with a WIT issued for one)',
    });
    expect((await refusals('listed-txn-1', 'listed')).map((e) => [e.reason, e.client_id])).toEqual([['unauthorized_client', plain.id]]);
    expect((await ts.admin('GET', `/admin/tokens?client_id=${enc(plain.id)}`)).body.tokens).toEqual([]);
  });

  it('checks the agent checksum a WIT-authenticated agent presents against the workflow', async () => {
    const allowed = computeAgentChecksum({ prompt: 'You read orders.', tools: [{ name: 'orders.read' }] });
    const other = computeAgentChecksum({ prompt: 'You read orders, and more.', tools: [{ name: 'orders.read' }] });
    const id = agentId('pinned');
    expect((await ts.admin('POST', '/admin/agents', {
      id, token_endpoint_auth_method: 'wit', scopes: ['orders:read'], audiences: [API], attestors: [{ type: 'join_token' }], agent_checksums: [allowed, other],
    })).status).toBe(201);
    expect((await ts.admin('POST', '/admin/workflows', {
      id: 'pinned', version: 1, steps: [{ id: 'read', agent: id, tool: 'orders.read', scopes: ['orders:read'] }], agent_checksums: { [id]: [allowed] },
    })).status).toBe(201);
    const key = await newAgentKey();
    const unregistered = await tokenWithWit(ts, id, await witByJoinToken(ts, id, key, { agent_checksum: other }), key, { workflow_id: 'pinned', workflow_step: 'read', txn: 'pinned-txn-1' });
    expect(unregistered.status).toBe(400);
    expect(unregistered.body).toEqual({ error: 'unauthorized_client', error_description: 'the agent checksum presented is not one workflow pinned allows for this agent' });
    expect((await refusals('pinned-txn-1', 'pinned')).map((e) => [e.reason, e.client_id])).toEqual([['unauthorized_client', id]]);
    const ok = await tokenWithWit(ts, id, await witByJoinToken(ts, id, key, { agent_checksum: allowed }), key, { workflow_id: 'pinned', workflow_step: 'read' });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const claims = decodeJwt(ok.body.access_token);
    expect(claims).toMatchObject({ agent_checksum: allowed, intent: { workflow_id: 'pinned', workflow_step: 'read', executed_by: id }, cnf: { jkt: expect.any(String) } });
    const record = (await ts.admin('GET', `/admin/tokens/${claims.jti}`)).body;
    expect(record).toMatchObject({ workflow_id: 'pinned', workflow_version: 1, workflow_step: 'read', txn: claims.txn, parent_jti: expect.any(String) });
  });
});
