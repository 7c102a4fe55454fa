import { expect } from 'vitest';
import type { TestServer } from './test-server.js';
import { basic, postForm } from './oauth-client.js';

export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const AT = 'urn:ietf:params:oauth:token-type:access_token';
export const TXN = 'urn:ietf:params:oauth:token-type:txn_token';
export const JWT = 'urn:ietf:params:oauth:token-type:jwt';

/** A registered secret-based agent and how to call the token endpoint as it. */
export interface SecretAgent {
  id: string;
  secret: string;
  auth: { authorization: string };
  token(form: Record<string, string>, headers?: Record<string, string>): ReturnType<typeof postForm>;
}

export async function registerSecretAgent(ts: TestServer, body: Record<string, unknown>): Promise<SecretAgent> {
  const res = await ts.admin('POST', '/admin/agents', body);
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const id = body.id as string;
  const secret = res.body.client_secret as string;
  const auth = { authorization: basic(id, secret) };
  return { id, secret, auth, token: (form, headers = {}) => postForm(`${ts.url}/token`, form, { ...auth, ...headers }) };
}

/** A token-exchange request as `agent`. */
export function exchange(agent: SecretAgent, form: Record<string, string>, headers?: Record<string, string>) {
  return agent.token({ grant_type: TOKEN_EXCHANGE, ...form }, headers);
}
