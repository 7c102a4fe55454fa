import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { postForm } from '../support/oauth-client.js';
import { AT, TOKEN_EXCHANGE } from '../support/agents.js';
import { newAgentKey, witByJoinToken, workloadHeaders, type AgentKey } from '../support/workload.js';
import { computeAgentChecksum } from '../../src/identity/agent-checksum.js';
import { createClientAttestationPop } from '../../src/tokens/client-attestation-pop.js';
import { witAuthStorage, workloadAuthOf } from '../../src/oauth/wit-client-auth.js';
import { errors } from 'oidc-provider';

/**
 * WIT client authentication is one mechanism: a request carrying a WIT (either header form) and another
 * client's `client_secret` or `client_assertion` is refused `401 invalid_client`, before the provider could
 * authenticate that client by its credential and issue it a token bound to the WIT's key, stamped with the
 * WIT's agent checksum and recorded as a child of the WIT.
 */
describe('WIT client authentication mixed with another client\'s credential', () => {
  let ts: TestServer;
  let key: AgentKey;
  let wit: string;
  const X = agentId('attested-x');
  const Y = agentId('secret-y');
  const API = 'https://api.example.com';
  let ySecret: string;
  const checksum = computeAgentChecksum({ prompt: 'attested', tools: [{ name: 't' }], config: { model: 'm' } } as never);

  beforeAll(async () => {
    ts = await startTestServer();
    const rx = await ts.admin('POST', '/admin/agents', { id: X, token_endpoint_auth_method: 'wit', audiences: [API], scopes: ['tools:call'], attestors: [{ type: 'join_token' }], agent_checksums: [checksum] });
    expect(rx.status, JSON.stringify(rx.body)).toBe(201);
    const ry = await ts.admin('POST', '/admin/agents', { id: Y, token_endpoint_auth_method: 'client_secret_post', grant_types: ['client_credentials', TOKEN_EXCHANGE], audiences: [API], scopes: ['tools:call'] });
    expect(ry.status, JSON.stringify(ry.body)).toBe(201);
    ySecret = ry.body.client_secret;
    key = await newAgentKey('ES256');
    wit = await witByJoinToken(ts, X, key, { agent_checksum: checksum });
  });
  afterAll(async () => { await ts?.close(); });

  async function ySubject(): Promise<string> {
    const cc = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: Y, client_secret: ySecret, resource: API });
    expect(cc.status, JSON.stringify(cc.body)).toBe(200);
    return cc.body.access_token;
  }

  const witHeaders = async (form: 'wimse' | 'attestation', path = '/token') => (form === 'wimse'
    ? workloadHeaders(ts, wit, key, path)
    : { 'oauth-client-attestation': wit, 'oauth-client-attestation-pop': await createClientAttestationPop({ key: key.privateKey, alg: key.alg, issuer: ts.issuer }) });

  function refusedAsMixed(res: { status: number; body: any; headers: Headers }) {
    expect(res.status, JSON.stringify(res.body)).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect(res.body.error_description).toBe('client authentication must use one mechanism only');
    expect(res.headers.get('cache-control')).toMatch(/no-store/);
  }

  it('control: X\'s WIT alone authenticates X, and Y\'s secret alone authenticates Y', async () => {
    for (const form of ['wimse', 'attestation'] as const) {
      const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: X, resource: API }, await witHeaders(form));
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(decodeJwt(res.body.access_token).client_id).toBe(X);
    }
    expect(decodeJwt(await ySubject()).client_id).toBe(Y);
  });

  for (const form of ['wimse', 'attestation'] as const) {
    it(`${form} headers of X with Y's client_secret in the body at token exchange: 401 invalid_client`, async () => {
      const res = await postForm(`${ts.url}/token`, {
        grant_type: TOKEN_EXCHANGE, client_id: Y, client_secret: ySecret, subject_token: await ySubject(), subject_token_type: AT, resource: API,
      }, await witHeaders(form));
      refusedAsMixed(res);
    });

    it(`${form} headers of X with a client_assertion (or only its type) in the body: 401 invalid_client`, async () => {
      const extras: Record<string, string>[] = [{ client_assertion: 'a.b.c', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' }, { client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' }];
      for (const extra of extras) {
        const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: Y, resource: API, ...extra }, await witHeaders(form));
        refusedAsMixed(res);
      }
    });

    it(`${form} headers of X with Y's client_secret in the query: 401 invalid_client`, async () => {
      const query = new URLSearchParams({ client_secret: ySecret });
      const res = await postForm(`${ts.url}/token?${query}`, { grant_type: 'client_credentials', client_id: Y, resource: API }, await witHeaders(form, '/token'));
      refusedAsMixed(res);
    });
  }

  it('the body is read before the provider: with a WIT, an unknown charset or a body past the limit is 400 invalid_request, never a 500', async () => {
    const form = { grant_type: 'client_credentials', client_id: X, resource: API };
    for (const form_ of ['wimse', 'attestation'] as const) {
      const bogus = await postForm(`${ts.url}/token`, form, { ...(await witHeaders(form_)), 'content-type': 'application/x-www-form-urlencoded; charset=bogus' });
      expect(bogus.status, JSON.stringify(bogus.body)).toBe(400);
      expect(bogus.body.error).toBe('invalid_request');
      const large = await postForm(`${ts.url}/token`, { ...form, pad: 'x'.repeat(60 * 1024) }, await witHeaders(form_));
      expect(large.status, JSON.stringify(large.body)).toBe(400);
      expect(large.body.error).toBe('invalid_request');
      // The same request in a charset the provider knows is read once, by both.
      const latin1 = await postForm(`${ts.url}/token`, form, { ...(await witHeaders(form_)), 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1' });
      expect(latin1.status, JSON.stringify(latin1.body)).toBe(200);
    }
  });

  it('X\'s WIT does not let Y pass a workflow step pinned to an agent checksum Y never ran with', async () => {
    const wf = await ts.admin('POST', '/admin/workflows', {
      id: 'pinned-y', version: 1, steps: [{ id: 'read', agent: Y, tool: 't', scopes: ['tools:call'] }], agent_checksums: { [Y]: [checksum] },
    });
    expect(wf.status, JSON.stringify(wf.body)).toBe(201);
    const subject = await ySubject();
    const params = {
      grant_type: TOKEN_EXCHANGE, client_id: Y, client_secret: ySecret, subject_token: subject, subject_token_type: AT, resource: API,
      workflow_id: 'pinned-y', workflow_step: 'read',
    };
    // Control: Y alone is refused (it presents no checksum).
    const alone = await postForm(`${ts.url}/token`, params);
    expect(alone.status, JSON.stringify(alone.body)).toBe(400);
    expect(alone.body.error).toBe('unauthorized_client');
    refusedAsMixed(await postForm(`${ts.url}/token`, params, await workloadHeaders(ts, wit, key, '/token')));
  });
});

describe('workloadAuthOf: the request\'s WIT, only for its own agent', () => {
  const auth = { agentId: 'agent-x', witJti: 'w1', jkt: 'k', jwk: { kty: 'EC' } };

  it('is the WIT authentication for its agent, nothing without one', () => {
    expect(workloadAuthOf('agent-x')).toBeUndefined();
    expect(witAuthStorage.run(auth, () => workloadAuthOf('agent-x'))).toBe(auth);
  });

  it('refuses another agent invalid_client, or (a lookup) sees no WIT for it', () => {
    expect(() => witAuthStorage.run(auth, () => workloadAuthOf('agent-y'))).toThrow(errors.InvalidClient);
    expect(() => witAuthStorage.run(auth, () => workloadAuthOf(''))).toThrow(errors.InvalidClient);
    expect(witAuthStorage.run(auth, () => workloadAuthOf('agent-y', 'ignore'))).toBeUndefined();
  });
});
