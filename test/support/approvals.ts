import { expect } from 'vitest';
import { decodeJwt } from 'jose';
import { agentId, type TestServer } from './test-server.js';
import { postForm } from './oauth-client.js';
import { readResponse } from './http.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from './agents.js';

export const CIBA = 'urn:openid:params:grant-type:ciba';

/** A registered approver and its credential (shown once at registration). */
export interface Approver {
  id: string;
  credential: string;
}

export async function registerApprover(ts: TestServer, id: string): Promise<Approver> {
  const res = await ts.admin('POST', '/admin/approvers', { id });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { id, credential: res.body.credential as string };
}

/** A backchannel authentication request as `agent`. */
export function backchannel(ts: TestServer, agent: SecretAgent, form: Record<string, string>) {
  return postForm(`${ts.url}/backchannel`, form, agent.auth);
}

/** A poll of the token endpoint for a CIBA request. */
export function poll(agent: SecretAgent, authReqId: string) {
  return agent.token({ grant_type: CIBA, auth_req_id: authReqId });
}

/** A call of the approver API with a bearer credential. */
export async function approverApi(ts: TestServer, credential: string, method: string, path: string, body?: unknown) {
  return readResponse(await fetch(`${ts.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${credential}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  }));
}

/** The agents and approvers of the `refund` workflow registered by {@link registerRefundWorkflow}. */
export interface RefundWorkflow {
  reader: SecretAgent;
  checker: SecretAgent;
  payer: SecretAgent;
  alice: Approver;
  bob: Approver;
}

/**
 * Registers the `refund` workflow (version 1) on `ts` for `api`: fetch (reader) → check (checker, by token
 * exchange) → pay (payer, approval: true) → a fourth step of the caller's, with approvers alice and bob.
 */
export async function registerRefundWorkflow(ts: TestServer, opts: {
  api: string; payer: { grant_types: string[]; scopes: string[] }; fourth: (agents: Pick<RefundWorkflow, 'reader' | 'checker' | 'payer'>) => Record<string, unknown>;
}): Promise<RefundWorkflow> {
  const reader = await registerSecretAgent(ts, { id: agentId('reader'), scopes: ['orders:read'], audiences: [opts.api] });
  const checker = await registerSecretAgent(ts, {
    id: agentId('checker'), grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['orders:read'], audiences: [opts.api], token_exchange: { may_act_for_others: true },
  });
  const payer = await registerSecretAgent(ts, { id: agentId('payer'), ...opts.payer, audiences: [opts.api] });
  const alice = await registerApprover(ts, 'alice@example.com');
  const bob = await registerApprover(ts, 'bob@example.com');
  expect((await ts.admin('POST', '/admin/workflows', {
    id: 'refund', version: 1,
    steps: [
      { id: 'fetch', agent: reader.id, tool: 'orders.read', scopes: ['orders:read'] },
      { id: 'check', agent: checker.id, tool: 'orders.check', scopes: ['orders:read'], depends_on: ['fetch'] },
      { id: 'pay', agent: payer.id, tool: 'payments.refund', scopes: ['payments:write'], depends_on: ['check'], approval: true },
      opts.fourth({ reader, checker, payer }),
    ],
  })).status).toBe(201);
  return { reader, checker, payer, alice, bob };
}

/** Runs the refund workflow's fetch (client credentials) and check (token exchange); returns both tokens and the transaction. */
export async function fetchAndCheck(w: Pick<RefundWorkflow, 'reader' | 'checker'>): Promise<{ t1: string; t2: string; txn: string }> {
  const t1 = await w.reader.token({ grant_type: 'client_credentials', workflow_id: 'refund', workflow_step: 'fetch' });
  expect(t1.status, JSON.stringify(t1.body)).toBe(200);
  const t2 = await exchange(w.checker, { subject_token: t1.body.access_token, subject_token_type: AT, workflow_id: 'refund', workflow_step: 'check' });
  expect(t2.status, JSON.stringify(t2.body)).toBe(200);
  return { t1: t1.body.access_token as string, t2: t2.body.access_token as string, txn: decodeJwt(t1.body.access_token).txn as string };
}
