import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';

const API = 'https://api.example.com';

describe('health, discovery, closed routes and logs', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('answers /healthz and /readyz', async () => {
    expect(await (await fetch(`${ts.url}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${ts.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready' });
  });

  it('serves the same metadata at both discovery endpoints, listing exactly what works', async () => {
    const rfc8414 = await (await fetch(`${ts.url}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>;
    const oidc = await (await fetch(`${ts.url}/.well-known/openid-configuration`)).json() as Record<string, unknown>;
    expect(rfc8414).toEqual(oidc);
    expect(rfc8414).toMatchObject({
      issuer: ts.issuer,
      token_endpoint: `${ts.issuer}/token`,
      jwks_uri: `${ts.issuer}/jwks`,
      introspection_endpoint: `${ts.issuer}/token/introspection`,
      revocation_endpoint: `${ts.issuer}/token/revocation`,
      grant_types_supported: ['client_credentials', 'urn:openid:params:grant-type:ciba', 'urn:ietf:params:oauth:grant-type:token-exchange', 'urn:ietf:params:oauth:grant-type:jwt-bearer'],
      backchannel_authentication_endpoint: `${ts.issuer}/backchannel`,
      backchannel_token_delivery_modes_supported: ['poll'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'attest_jwt_client_auth'],
      client_attestation_signing_alg_values_supported: ['EdDSA', 'ES256'],
      client_attestation_pop_signing_alg_values_supported: ['EdDSA', 'ES256'],
      response_types_supported: [],
    });
    expect(rfc8414.dpop_signing_alg_values_supported).toEqual(expect.arrayContaining(['EdDSA', 'ES256']));
    for (const absent of ['authorization_endpoint', 'userinfo_endpoint', 'end_session_endpoint', 'registration_endpoint', 'claims_supported']) {
      expect(rfc8414).not.toHaveProperty(absent);
    }
    // Every endpoint it names answers.
    for (const key of ['token_endpoint', 'introspection_endpoint', 'revocation_endpoint', 'backchannel_authentication_endpoint']) {
      const res = await postForm(rfc8414[key] as string, {});
      expect(res.status).toBeLessThan(500);
      expect(res.status).not.toBe(404);
    }
    expect((await fetch(rfc8414.jwks_uri as string)).status).toBe(200);
  });

  it('closes the provider routes it does not offer', async () => {
    for (const path of ['/auth', '/me', '/session/end', '/reg', '/request', '/device/auth', '/nope']) {
      const res = await fetch(`${ts.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(await res.json()).toMatchObject({ error: 'not_found' });
    }
    for (const [method, path] of [['GET', '/token'], ['POST', '/healthz'], ['DELETE', '/jwks'], ['POST', '/.well-known/oauth-authorization-server'], ['PUT', '/.well-known/openid-configuration']]) {
      const res = await fetch(`${ts.url}${path}`, { method });
      expect(res.status, `${method} ${path}`).toBe(405);
      expect(res.headers.get('allow')).toBeTruthy();
      expect(await res.json()).toMatchObject({ error: 'invalid_request' });
    }
  });

  it('refuses malformed, oversized and wrongly typed token requests with RFC 6749 errors, never a 500', async () => {
    const id = agentId('bodies');
    const secret = (await ts.admin('POST', '/admin/agents', { id, audiences: [API] })).body.client_secret as string;
    const auth = { authorization: basic(id, secret) };
    const cases: { body: string; type?: string; headers?: Record<string, string>; error: string }[] = [
      { body: JSON.stringify({ grant_type: 'client_credentials' }), type: 'application/json', headers: auth, error: 'invalid_request' },
      { body: 'grant_type=client_credentials', type: 'text/plain', headers: auth, error: 'invalid_request' },
      { body: `grant_type=client_credentials&pad=${'a'.repeat(200_000)}`, headers: auth, error: 'invalid_request' },
      { body: '%%%=&&=%zz', headers: auth, error: 'invalid_request' },
      { body: '', headers: auth, error: 'invalid_request' },
      { body: 'grant_type=password&username=a&password=b', headers: auth, error: 'unsupported_grant_type' },
      { body: 'grant_type=client_credentials&grant_type=client_credentials', headers: auth, error: 'invalid_request' },
      { body: 'grant_type=client_credentials&scope=a%22b', headers: auth, error: 'invalid_scope' },
      { body: 'grant_type=client_credentials&resource=not-a-uri', headers: auth, error: 'invalid_target' },
      { body: 'grant_type=client_credentials&resource=https://api.example.com%23frag', headers: auth, error: 'invalid_target' },
      { body: 'grant_type=client_credentials', headers: { authorization: 'Basic !!!' }, error: 'invalid_request' },
      { body: 'grant_type=client_credentials', headers: { authorization: basic(agentId('nobody'), 'x') }, error: 'invalid_client' },
      { body: 'grant_type=client_credentials', headers: { authorization: basic(id, 'wrong') }, error: 'invalid_client' },
    ];
    for (const c of cases) {
      const res = await fetch(`${ts.url}/token`, {
        method: 'POST',
        headers: { 'content-type': c.type ?? 'application/x-www-form-urlencoded', ...c.headers },
        body: c.body,
      });
      const body = await res.json() as { error: string; error_description: string };
      expect(res.status, c.body.slice(0, 60)).toBeGreaterThanOrEqual(400);
      expect(res.status, c.body.slice(0, 60)).toBeLessThan(500);
      expect(body.error, c.body.slice(0, 60)).toBe(c.error);
      expect(body.error_description).toEqual(expect.any(String));
      expect(res.headers.get('cache-control')).toMatch(/no-store/);
      expect(JSON.stringify(body)).not.toMatch(/\bat .*\.js:\d+/);
    }
    const unauth = await fetch(`${ts.url}/token`, { method: 'POST', headers: { authorization: basic(id, 'wrong'), 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=client_credentials' });
    expect(unauth.status).toBe(401);
  });

  it('writes one JSON log line per request and never a token or secret', async () => {
    const id = agentId('logged');
    const secret = (await ts.admin('POST', '/admin/agents', { id, audiences: [API], scopes: ['s'] })).body.client_secret as string;
    const tok = (await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, secret) })).body.access_token as string;
    await postForm(`${ts.url}/token/introspection`, { token: tok }, { authorization: basic(id, secret) });
    await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: id, client_secret: 'wrong-secret-value' });
    await fetch(`${ts.url}/healthz?token=${tok}`);
    await new Promise((r) => setTimeout(r, 50));
    const all = ts.logs.join('');
    for (const secretValue of [secret, tok, tok.split('.')[2]!, 'wrong-secret-value', 'test-admin-token']) {
      expect(all).not.toContain(secretValue);
    }
    const lines = ts.logs.flatMap((chunk) => chunk.split('\n')).filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const requests = lines.filter((l) => l.msg === 'request');
    expect(requests.some((l) => l.path === '/token' && l.status === 200 && l.client_id === id)).toBe(true);
    expect(requests.some((l) => l.path === '/healthz')).toBe(true);
    for (const l of requests) expect(Object.keys(l)).not.toContain('query');
  });
});
