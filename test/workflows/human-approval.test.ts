import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { agentId, ADMIN_TOKEN, enc, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, type SecretAgent } from '../support/agents.js';
import { client, discover } from '../support/oauth-client.js';
import { approverApi, backchannel, CIBA, fetchAndCheck, poll, registerRefundWorkflow, type Approver } from '../support/approvals.js';
import { postForm } from '../support/oauth-client.js';
import { newAgentKey, witByJoinToken, workloadHeaders } from '../support/workload.js';
import { computeAgentChecksum } from '../../src/identity/agent-checksum.js';
import { createClientAttestationPop } from '../../src/tokens/client-attestation-pop.js';

const API = 'https://orders.example/api';

describe('human approval of workflow steps (CIBA)', () => {
  let ts: TestServer;
  let reader: SecretAgent;
  let checker: SecretAgent;
  let payer: SecretAgent;
  let alice: Approver;
  let jwks: ReturnType<typeof createRemoteJWKSet>;

  const hop = (agent: SecretAgent, subject: string, form: Record<string, string>) => exchange(agent, { subject_token: subject, subject_token_type: AT, ...form });
  const run = async (txn: string) => (await ts.admin('GET', `/admin/workflows/refund/runs/${enc(txn)}`)).body;
  const firstTwo = () => fetchAndCheck({ reader, checker });

  beforeAll(async () => {
    ts = await startTestServer({ APPROVAL_POLL_INTERVAL: '1' });
    jwks = createRemoteJWKSet(new URL(`${ts.url}/jwks`));
    ({ reader, checker, payer, alice } = await registerRefundWorkflow(ts, {
      api: API, payer: { grant_types: ['client_credentials', CIBA], scopes: ['payments:write', 'payments:read'] },
      fourth: (a) => ({ id: 'notify', agent: a.checker.id, tool: 'notify.send', scopes: ['orders:read'], depends_on: ['pay'] }),
    }));
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
    expect((audit.approval_events as { decision: string; client_id: string; detail: string }[]).map((e) => [e.decision, e.client_id])).toEqual([['approval_requested', payer.id], ['approved', payer.id]]);
    expect(audit.approval_events[1].detail).toBe(`approval ${approval.id} of step pay approved by ${alice.id}`);
  });

  it('approves a step of a WIT-authenticated agent whose checksum the workflow lists (the WIT as a client attestation, or in the WIMSE headers)', async () => {
    const allowed = computeAgentChecksum({ prompt: 'You refund orders.', tools: [{ name: 'payments.refund' }] });
    const other = computeAgentChecksum({ prompt: 'You refund anything.', tools: [{ name: 'payments.refund' }] });
    const id = agentId('pinned-payer');
    expect((await ts.admin('POST', '/admin/agents', {
      id, token_endpoint_auth_method: 'wit', grant_types: [CIBA], scopes: ['payments:write'], audiences: [API], attestors: [{ type: 'join_token' }], agent_checksums: [allowed, other],
    })).status).toBe(201);
    expect((await ts.admin('POST', '/admin/workflows', {
      id: 'pinned-refund', version: 1, steps: [{ id: 'pay', agent: id, tool: 'payments.refund', scopes: ['payments:write'], approval: true }], agent_checksums: { [id]: [allowed] },
    })).status).toBe(201);
    const key = await newAgentKey();
    const asWit = async (path: string, wit: string, form: Record<string, string>) => postForm(`${ts.url}${path}`, { client_id: id, ...form }, await workloadHeaders(ts, wit, key, path));
    const asAttested = async (path: string, wit: string, form: Record<string, string>) => postForm(`${ts.url}${path}`, { client_id: id, ...form }, {
      'oauth-client-attestation': wit, 'oauth-client-attestation-pop': await createClientAttestationPop({ key: key.privateKey, alg: key.alg, issuer: ts.issuer }),
    });
    const form = { scope: 'openid', login_hint: alice.id, binding_message: 'Refund order 7', workflow_id: 'pinned-refund', workflow_step: 'pay' };
    const refused = await asWit('/backchannel', await witByJoinToken(ts, id, key, { agent_checksum: other }), form);
    expect(refused.body).toEqual({ error: 'unauthorized_client', error_description: 'the agent checksum presented is not one workflow pinned-refund allows for this agent' });
    const wit = await witByJoinToken(ts, id, key, { agent_checksum: allowed });
    const started = await asAttested('/backchannel', wit, form);
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const approval = ((await approverApi(ts, alice.credential, 'GET', '/approvals')).body.approvals as { id: string; client_id: string; txn: string }[]).find((a) => a.client_id === id)!;
    expect((await approverApi(ts, alice.credential, 'POST', `/approvals/${approval.id}/approve`)).status).toBe(200);
    const res = await asWit('/token', wit, { grant_type: CIBA, auth_req_id: started.body.auth_req_id });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(decodeJwt(res.body.access_token)).toMatchObject({
      client_id: id, txn: approval.txn, agent_checksum: allowed, cnf: { jkt: expect.any(String) },
      intent: { workflow_id: 'pinned-refund', workflow_step: 'pay', executed_by: id, approved_by: alice.id },
    });
  });
});

describe('human approval: refusals', () => {
  let ts: TestServer;
  let reader: SecretAgent;
  let checker: SecretAgent;
  let payer: SecretAgent;
  let alice: Approver;
  let bob: Approver;

  const hop = (agent: SecretAgent, subject: string, form: Record<string, string>) => exchange(agent, { subject_token: subject, subject_token_type: AT, ...form });
  const run = async (txn: string) => (await ts.admin('GET', `/admin/workflows/refund/runs/${enc(txn)}`)).body;
  const firstTwo = () => fetchAndCheck({ reader, checker });
  const ask = (txn: string, extra: Record<string, string> = {}) => backchannel(ts, payer, {
    scope: 'openid payments:write', login_hint: alice.id, binding_message: 'Refund order 1234: 20 EUR',
    workflow_id: 'refund', workflow_step: 'pay', txn, ...extra,
  });
  /** Asks for approval of `pay` and returns the request id and the approval's id. */
  const asked = async (txn: string, extra: Record<string, string> = {}) => {
    const res = await ask(txn, extra);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const list = (await approverApi(ts, ADMIN_TOKEN, 'GET', '/approvals')).body.approvals as { id: string; txn: string }[];
    return { authReqId: res.body.auth_req_id as string, approvalId: list.filter((a) => a.txn === txn).at(-1)!.id };
  };

  beforeAll(async () => {
    ts = await startTestServer({ APPROVAL_POLL_INTERVAL: '2', APPROVAL_TTL: '120' });
    ({ reader, checker, payer, alice, bob } = await registerRefundWorkflow(ts, {
      api: API, payer: { grant_types: ['client_credentials', CIBA], scopes: ['payments:write', 'orders:read'] },
      fourth: (a) => ({ id: 'audit', agent: a.payer.id, tool: 'orders.read', scopes: ['orders:read'], depends_on: ['fetch'] }),
    }));
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('refuses an approval-gated step at client credentials, naming CIBA', async () => {
    const { txn } = await firstTwo();
    const res = await payer.token({ grant_type: 'client_credentials', workflow_id: 'refund', workflow_step: 'pay', txn });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({
      error: 'invalid_request',
      error_description: `step pay of workflow refund needs human approval: ask for it with a CIBA backchannel authentication request, then poll with grant_type ${CIBA}`,
    });
    expect((await run(txn)).refusals).toEqual([expect.objectContaining({ client_id: payer.id, reason: 'invalid_request', detail: expect.stringContaining('needs human approval') })]);
  });

  it('says in its metadata that user_code is not supported, and refuses one', async () => {
    const metadata = (await fetch(`${ts.url}/.well-known/oauth-authorization-server`).then((r) => r.json())) as Record<string, unknown>;
    expect(metadata.backchannel_user_code_parameter_supported).toBe(false);
    const oidc = (await fetch(`${ts.url}/.well-known/openid-configuration`).then((r) => r.json())) as Record<string, unknown>;
    expect(oidc.backchannel_user_code_parameter_supported).toBe(false);
    const { txn } = await firstTwo();
    const res = await ask(txn, { user_code: '1234' });
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'invalid_request', error_description: 'user_code is not supported' });
    expect((await approverApi(ts, ADMIN_TOKEN, 'GET', '/approvals')).body.approvals.filter((a: { txn: string }) => a.txn === txn)).toEqual([]);
  });

  it('answers authorization_pending before the decision, slow_down when polled too fast, and then the token', async () => {
    const { txn } = await firstTwo();
    const { authReqId, approvalId } = await asked(txn);
    const first = await poll(payer, authReqId);
    expect(first.status).toBe(400);
    expect(first.body.error).toBe('authorization_pending');
    const fast = await poll(payer, authReqId);
    expect(fast.status).toBe(400);
    expect(fast.body.error).toBe('slow_down');
    ts.clock.advance(3);
    expect((await poll(payer, authReqId)).body.error).toBe('authorization_pending');
    // The admin token may decide too; the token then names the admin as approver.
    const approved = await approverApi(ts, ADMIN_TOKEN, 'POST', `/approvals/${approvalId}/approve`, { reason: 'on behalf of alice' });
    expect(approved.body).toMatchObject({ status: 'approved', decided_by: 'admin', reason: 'on behalf of alice' });
    const ok = await poll(payer, authReqId);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.id_token).toBeUndefined();
    expect(decodeJwt(ok.body.access_token)).toMatchObject({ sub: alice.id, intent: { workflow_step: 'pay', approved_by: 'admin' } });
    const reasons = ((await run(txn)).refusals as { reason: string }[]).map((e) => e.reason);
    expect(reasons).toEqual(['authorization_pending', 'slow_down', 'authorization_pending']);
  });

  it('refuses a denied approval with access_denied and records the denial', async () => {
    const { txn } = await firstTwo();
    const { authReqId, approvalId } = await asked(txn);
    const denied = await approverApi(ts, alice.credential, 'POST', `/approvals/${approvalId}/deny`, { reason: 'amount too high' });
    expect(denied.status).toBe(200);
    expect(denied.body).toMatchObject({ status: 'denied', decided_by: alice.id, reason: 'amount too high' });
    const res = await poll(payer, authReqId);
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'access_denied', error_description: `denied by ${alice.id}: amount too high` });
    // Decided once: no second decision, no token later.
    expect((await approverApi(ts, alice.credential, 'POST', `/approvals/${approvalId}/approve`)).status).toBe(409);
    expect((await poll(payer, authReqId)).body.error).toBe('invalid_grant');
    const audit = await run(txn);
    expect(audit.steps[2]).toMatchObject({ id: 'pay', status: 'not_issued', approvals: [expect.objectContaining({ status: 'denied', decided_by: alice.id, reason: 'amount too high', token_jti: null })] });
    expect((audit.refusals as { reason: string }[]).map((e) => e.reason)).toEqual(['access_denied', 'invalid_grant']);
    const events = (await ts.admin('GET', '/admin/events?decision=denied')).body.events as { detail: string }[];
    expect(events[0]!.detail).toContain('amount too high');
  });

  it('refuses an expired approval with expired_token, for the agent and for the approver', async () => {
    const { txn } = await firstTwo();
    const { authReqId, approvalId } = await asked(txn, { requested_expiry: '30' });
    const other = await asked(txn);
    const unanswered = await asked(txn);
    ts.clock.advance(31);
    const res = await poll(payer, authReqId);
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ error: 'expired_token', error_description: `approval request ${approvalId} expired unanswered` });
    const late = await approverApi(ts, alice.credential, 'POST', `/approvals/${approvalId}/approve`);
    expect(late.status).toBe(409);
    ts.clock.advance(120);
    const late2 = await approverApi(ts, alice.credential, 'POST', `/approvals/${other.approvalId}/approve`);
    expect(late2.status).toBe(409);
    expect(late2.body).toEqual({ error: 'expired', error_description: `approval ${other.approvalId} has expired` });
    const audit = await run(txn);
    expect(audit.steps[2].approvals).toEqual([
      expect.objectContaining({ id: approvalId, status: 'expired', decided_by: null, reason: 'polled after its expiry' }),
      expect.objectContaining({ id: other.approvalId, status: 'expired', decided_by: null, reason: `${alice.id} answered after its expiry` }),
      expect.objectContaining({ id: unanswered.approvalId, status: 'expired', decided_by: null, reason: 'no answer before its expiry' }),
    ]);
    const decisions = (audit.approval_events as { decision: string; reason: string | null; detail: string }[]).map((e) => [e.decision, e.reason]);
    expect(decisions).toEqual([
      ['approval_requested', null], ['approval_requested', null], ['approval_requested', null],
      ['expired', 'expired_token'], ['expired', 'expired_token'], ['expired', 'expired_token'],
    ]);
    expect((audit.approval_events as { detail: string }[]).at(-1)!.detail).toContain(`approval ${unanswered.approvalId} of step pay expired unanswered: no answer before its expiry`);
    expect((audit.refusals as { reason: string }[]).map((e) => e.reason)).toEqual(['expired_token']);
    const events = (await ts.admin('GET', '/admin/events?decision=expired')).body.events as { detail: string }[];
    expect(events.map((e) => e.detail)).toEqual(expect.arrayContaining([expect.stringContaining(`approval ${approvalId} of step pay expired unanswered`)]));
  });

  it('answers expired_token for an approval not redeemed before its expiry', async () => {
    const { txn } = await firstTwo();
    const { authReqId, approvalId } = await asked(txn, { requested_expiry: '20' });
    expect((await approverApi(ts, alice.credential, 'POST', `/approvals/${approvalId}/approve`)).status).toBe(200);
    ts.clock.advance(21);
    const res = await poll(payer, authReqId);
    expect(res.body).toEqual({ error: 'expired_token', error_description: `approval request ${approvalId} expired before it was redeemed` });
    const audit = await run(txn);
    expect(audit.steps[2]).toMatchObject({ status: 'not_issued', approvals: [expect.objectContaining({ status: 'approved', token_jti: null })] });
    expect((audit.refusals as { reason: string }[]).map((e) => e.reason)).toEqual(['expired_token']);
  });

  it('lets only the named approver (or the admin) decide', async () => {
    const { txn } = await firstTwo();
    const { authReqId, approvalId } = await asked(txn);
    expect((await approverApi(ts, bob.credential, 'GET', '/approvals')).body.approvals).toEqual([]);
    expect((await approverApi(ts, bob.credential, 'GET', `/approvals/${approvalId}`)).status).toBe(404);
    const wrong = await approverApi(ts, bob.credential, 'POST', `/approvals/${approvalId}/approve`);
    expect(wrong.status).toBe(403);
    expect(wrong.body).toEqual({ error: 'access_denied', error_description: `approval ${approvalId} was asked of another approver` });
    expect((await approverApi(ts, 'apv_not-a-credential', 'POST', `/approvals/${approvalId}/approve`)).status).toBe(401);
    expect((await fetch(`${ts.url}/approvals/${approvalId}/approve`, { method: 'POST' })).status).toBe(401);
    expect((await poll(payer, authReqId)).body.error).toBe('authorization_pending');
    expect((await run(txn)).steps[2].approvals).toEqual([expect.objectContaining({ status: 'pending', decided_by: null })]);
  });

  it('refuses a backchannel request for a step whose dependencies have not run, and unknown workflows and steps', async () => {
    const t1 = await reader.token({ grant_type: 'client_credentials', workflow_id: 'refund', workflow_step: 'fetch' });
    const txn = decodeJwt(t1.body.access_token).txn as string;
    const early = await ask(txn);
    expect(early.status).toBe(400);
    expect(early.body).toEqual({ error: 'invalid_request', error_description: `step pay depends on check, which has not run in transaction ${txn}` });
    expect((await run(txn)).refusals).toEqual([expect.objectContaining({ action: 'backchannel_authentication', client_id: payer.id, reason: 'invalid_request', detail: expect.stringContaining('depends on check') })]);
    expect((await approverApi(ts, ADMIN_TOKEN, 'GET', '/approvals')).body.approvals.filter((a: { txn: string }) => a.txn === txn)).toEqual([]);

    expect((await ask(txn, { workflow_id: 'nope' })).body).toEqual({ error: 'invalid_request', error_description: 'workflow nope is not registered' });
    expect((await ask(txn, { workflow_step: 'ship' })).body).toEqual({ error: 'invalid_request', error_description: 'workflow refund version 1 has no step "ship"' });
    expect((await ask(txn, { workflow_step: 'audit' })).body).toEqual({ error: 'invalid_request', error_description: 'step audit of workflow refund needs no human approval: ask for its token at the token endpoint' });
    const none = await backchannel(ts, payer, { scope: 'openid payments:write', login_hint: alice.id, binding_message: 'Refund' });
    expect(none.body).toEqual({ error: 'invalid_request', error_description: 'workflow_id and workflow_step are required: backchannel authentication here approves workflow steps' });
    const ready = (await firstTwo()).txn;
    expect((await ask(ready, { login_hint: 'mallory@example.com' })).body.error).toBe('unknown_user_id');
    expect((await backchannel(ts, payer, { scope: 'openid', login_hint: alice.id, workflow_id: 'refund', workflow_step: 'pay', txn: ready })).body.error).toBe('invalid_binding_message');
    expect((await ask(ready, { binding_message: 'line\nbreak' })).body.error).toBe('invalid_binding_message');
    // The request is stored as made: a NUL anywhere (here in acr_values) is refused, not a 500.
    expect((await ask(ready, { acr_values: 'urn:acr\u0000x' })).body).toEqual({ error: 'invalid_request', error_description: 'acr_values must not contain NUL (U+0000) characters' });
    expect((await ask(ready, { scope: 'openid orders:read' })).body).toEqual({ error: 'invalid_scope', error_description: 'scope beyond workflow step pay: orders:read' });
    expect((await ask(ready, { scope: 'payments:write' })).body.error).toBe('invalid_request');
    const byChecker = await backchannel(ts, checker, { scope: 'openid', login_hint: alice.id, binding_message: 'x', workflow_id: 'refund', workflow_step: 'pay', txn: ready });
    expect(byChecker.body).toEqual({ error: 'invalid_request', error_description: `${CIBA} is not allowed for this client` });
    const other = await registerSecretAgent(ts, { id: agentId('other'), grant_types: [CIBA], scopes: ['payments:write'], audiences: [API] });
    const byOther = await backchannel(ts, other, { scope: 'openid', login_hint: alice.id, binding_message: 'x', workflow_id: 'refund', workflow_step: 'pay', txn: ready });
    expect(byOther.body).toEqual({ error: 'unauthorized_client', error_description: `step pay of workflow refund is run by ${payer.id}, not by this agent` });
    expect((await approverApi(ts, ADMIN_TOKEN, 'GET', '/approvals')).body.approvals.filter((a: { txn: string }) => a.txn === ready)).toEqual([]);
    const events = (await ts.admin('GET', `/admin/events?decision=refused&client_id=${enc(payer.id)}`)).body.events as { action: string; detail: string }[];
    expect(events.map((e) => e.detail)).toEqual(expect.arrayContaining(['workflow nope is not registered', 'workflow refund version 1 has no step "ship"']));
  });

  it('gives at most one token when five polls of an approved request race', async () => {
    const { txn } = await firstTwo();
    const { authReqId, approvalId } = await asked(txn);
    await approverApi(ts, alice.credential, 'POST', `/approvals/${approvalId}/approve`);
    const results = await Promise.all(Array.from({ length: 5 }, () => poll(payer, authReqId)));
    // oidc-provider treats a second use of a request as a replay and revokes its grant, so a poll that has not
    // reached the grant yet may lose too: one token or none, never two.
    const ok = results.filter((r) => r.status === 200);
    expect(ok.length).toBeLessThanOrEqual(1);
    for (const r of results.filter((x) => x.status !== 200)) {
      expect(r.status).toBe(400);
      expect(['invalid_grant', 'invalid_request']).toContain(r.body.error);
    }
    const audit = await run(txn);
    expect(audit.steps[2].issued).toHaveLength(ok.length);
    const records = (await ts.admin('GET', `/admin/tokens?txn=${enc(txn)}`)).body.tokens.filter((t: { workflow_step: string }) => t.workflow_step === 'pay');
    expect(records).toHaveLength(ok.length);
    if (ok.length) expect(audit.steps[2].approvals).toEqual([expect.objectContaining({ status: 'approved', token_jti: decodeJwt(ok[0]!.body.access_token).jti })]);
    // The approval is spent either way.
    expect((await poll(payer, authReqId)).body.error).toBe('invalid_grant');
  });

  it('refuses to approve for an agent disabled since it asked', async () => {
    const gone = await registerSecretAgent(ts, { id: agentId('gone'), grant_types: [CIBA], scopes: ['payments:write'], audiences: [API] });
    expect((await ts.admin('POST', '/admin/workflows', {
      id: 'solo', version: 1, steps: [{ id: 'pay', agent: gone.id, tool: 'payments.refund', scopes: ['payments:write'], approval: true }],
    })).status).toBe(201);
    const res = await backchannel(ts, gone, { scope: 'openid', login_hint: alice.id, binding_message: 'Refund 1', workflow_id: 'solo', workflow_step: 'pay' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const approval = ((await approverApi(ts, alice.credential, 'GET', '/approvals')).body.approvals as { id: string; client_id: string; txn: string }[]).find((a) => a.client_id === gone.id)!;
    expect((await ts.admin('DELETE', `/admin/agents/${enc(gone.id)}`)).status).toBe(200);
    const refused = await approverApi(ts, alice.credential, 'POST', `/approvals/${approval.id}/approve`);
    expect(refused.status).toBe(409);
    expect(refused.body.error_description).toBe(`approval ${approval.id} was asked by an agent that is no longer active`);
    const audit = (await ts.admin('GET', `/admin/workflows/solo/runs/${enc(approval.txn)}`)).body;
    expect(audit.steps[0].approvals).toEqual([expect.objectContaining({ status: 'expired', decided_by: null, reason: 'the agent that asked is no longer active' })]);
  });

  it('does not let an approval be used twice, nor the step run again', async () => {
    const { txn } = await firstTwo();
    const { authReqId, approvalId } = await asked(txn);
    const second = await asked(txn);
    await approverApi(ts, alice.credential, 'POST', `/approvals/${approvalId}/approve`);
    await approverApi(ts, alice.credential, 'POST', `/approvals/${second.approvalId}/approve`);
    const ok = await poll(payer, authReqId);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const replay = await poll(payer, authReqId);
    expect(replay.status).toBe(400);
    expect(replay.body.error).toBe('invalid_grant');
    // Another approval of the same step in the same transaction: the step has run and is not repeatable.
    const again = await poll(payer, second.authReqId);
    expect(again.body).toEqual({ error: 'invalid_request', error_description: `step pay has already run in transaction ${txn} and is not repeatable` });
    expect((await ask(txn)).body).toEqual({ error: 'invalid_request', error_description: `step pay has already run in transaction ${txn} and is not repeatable` });
    const audit = await run(txn);
    expect(audit.steps[2].issued).toHaveLength(1);
    expect(audit.steps[2].approvals.map((a: { status: string; token_jti: string | null }) => [a.status, !!a.token_jti])).toEqual([['approved', true], ['approved', false]]);
    expect((audit.refusals as { reason: string }[]).map((e) => e.reason)).toEqual(['invalid_grant', 'invalid_request', 'invalid_request']);
  });
});
