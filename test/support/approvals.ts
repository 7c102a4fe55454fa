import { expect } from 'vitest';
import type { TestServer } from './test-server.js';
import { postForm } from './oauth-client.js';
import { readResponse } from './http.js';
import type { SecretAgent } from './agents.js';

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
