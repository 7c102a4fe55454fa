import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { agentId, ADMIN_TOKEN, enc, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { client, discover } from '../support/oauth-client.js';
import { approverApi, backchannel, CIBA, poll, registerApprover, type Approver } from '../support/approvals.js';

const API = 'https://orders.example/api';

describe('human approval of workflow steps (CIBA)', () => {
  let ts: TestServer;
  let reader: SecretAgent;
  let checker: SecretAgent;
  let payer: SecretAgent;
  let alice: Approver;
  let bob: Approver;
  let jwks: ReturnType<typeof createRemoteJWKSet>;

  const hop = (agent: SecretAgent, subject: string, form: Record<string, string>) => exchange(agent, { subject_token: subject, subject_token_type: AT, ...form });
  const run = async (txn: string) => (await ts.admin('GET', `/admin/workflows/refund/runs/${enc(txn)}`)).body;
  /** Runs fetch and check, and returns the check token and the transaction. */
  const firstTwo = async () => {
    const t1 = await reader.token({ grant_type: 'client_credentials', workflow_id: 'refund', workflow_step: 'fetch' });
    expect(t1.status, JSON.stringify(t1.body)).toBe(200);
    const t2 = await hop(checker, t1.body.access_token, { workflow_id: 'refund', workflow_step: 'check' });
    expect(t2.status, JSON.stringify(t2.body)).toBe(200);
    return { t2: t2.body.access_token as string, txn: decodeJwt(t1.body.access_token).txn as string };
  };
  const ask = (txn: string, extra: Record<string, string> = {}) => backchannel(ts, payer, {
    scope: 'openid payments:write', login_hint: alice.id, binding_message: 'Refund order 1234: 20 EUR',
    workflow_id: 'refund', workflow_step: 'pay', txn, ...extra,
  });

  beforeAll(async () => {
    ts = await startTestServer({ APPROVAL_POLL_INTERVAL: '1' });
    jwks = createRemoteJWKSet(new URL(`${ts.url}/jwks`));
    reader = await registerSecretAgent(ts, { id: agentId('reader'), scopes: ['orders:read'], audiences: [API] });
    checker = await registerSecretAgent(ts, {
      id: agentId('checker'), grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['orders:read', 'notify:send'], audiences: [API], token_exchange: { may_act_for_others: true },
    });
    payer = await registerSecretAgent(ts, { id: agentId('payer'), grant_types: ['client_credentials', CIBA], scopes: ['payments:write', 'payments:read'], audiences: [API] });
    alice = await registerApprover(ts, 'alice@example.com');
    bob = await registerApprover(ts, 'bob@example.com');
    const created = await ts.admin('POST', '/admin/workflows', {
      id: 'refund', version: 1,
      steps: [
        { id: 'fetch', agent: reader.id, tool: 'orders.read', scopes: ['orders:read'] },
        { id: 'check', agent: checker.id, tool: 'orders.check', scopes: ['orders:read'], depends_on: ['fetch'] },
        { id: 'pay', agent: payer.id, tool: 'payments.refund', scopes: ['payments:write'], depends_on: ['check'], approval: true },
        { id: 'notify', agent: checker.id, tool: 'notify.send', scopes: ['orders:read'], depends_on: ['pay'] },
      ],
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('runs four steps by three agents, the third approved by a human over CIBA, and shows who approved it', async () => {
    const { t2, txn } = await firstTwo();
    const config = await discover(ts.issuer, payer.id, client.ClientSecretBasic(payer.secret));
    expect(config.serverMetadata().backchannel_authentication_endpoint).toBe(`${ts.url}/backchannel`);
    expect(config.serverMetadata().backchannel_token_delivery_modes_supported).toEqual(['poll']);
    expect(config.serverMetadata().grant_types_supported).toContain(CIBA);

    const started = await client.initiateBackchannelAuthentication(config, {
      scope: 'openid payments:write', login_hint: alice.id, binding_message: 'Refund order 1234: 20 EUR',
      workflow_id: 'refund', workflow_step: 'pay', txn, resource: API,
    });
    expect(started).toMatchObject({ auth_req_id: expect.any(String), expires_in: expect.any(Number), interval: 1 });

    const pending = await approverApi(ts, alice.credential, 'GET', '/approvals');
    expect(pending.status).toBe(200);
    expect(pending.body.approvals).toHaveLength(1);
    const approval = pending.body.approvals[0];
    expect(approval).toMatchObject({ client_id: payer.id, approver_id: alice.id, workflow_id: 'refund', workflow_step: 'pay', txn, binding_message: 'Refund order 1234: 20 EUR', scope: 'payments:write', status: 'pending' });
    expect(JSON.stringify(pending.body)).not.toContain(started.auth_req_id);

    const approved = await approverApi(ts, alice.credential, 'POST', `/approvals/${approval.id}/approve`);
    expect(approved.status, JSON.stringify(approved.body)).toBe(200);
    expect(approved.body).toMatchObject({ status: 'approved', decided_by: alice.id });

    const tokens = await client.pollBackchannelAuthenticationGrant(config, started);
    expect(tokens.id_token).toBeUndefined();
    const { payload } = await jwtVerify(tokens.access_token, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
    expect(payload).toMatchObject({
      client_id: payer.id, sub: alice.id, txn, scope: 'payments:write',
      intent: { workflow_id: 'refund', workflow_version: 1, workflow_step: 'pay', executed_by: payer.id, approved_by: alice.id, approved_at: expect.any(Number) },
    });

    const t4 = await hop(checker, t2, { workflow_id: 'refund', workflow_step: 'notify' });
    expect(t4.status, JSON.stringify(t4.body)).toBe(200);

    const audit = await run(txn);
    const steps = audit.steps as { id: string; status: string; issued: Record<string, unknown>[]; approvals?: Record<string, unknown>[] }[];
    expect(steps.map((s) => [s.id, s.status])).toEqual([['fetch', 'issued'], ['check', 'issued'], ['pay', 'issued'], ['notify', 'issued']]);
    expect(steps[2]!.issued).toEqual([expect.objectContaining({ client_id: payer.id, jti: payload.jti, approved_by: alice.id, approval_id: approval.id })]);
    expect(steps[2]!.approvals).toEqual([expect.objectContaining({ id: approval.id, status: 'approved', approver: alice.id, decided_by: alice.id, token_jti: payload.jti })]);
    expect((await ts.admin('GET', `/admin/tokens/${payload.jti}`)).body).toMatchObject({ workflow_step: 'pay', txn, client_id: payer.id });
  });
});
