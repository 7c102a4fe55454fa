import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, decodeJwt, generateKeyPair } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';

const API = 'https://api.example.com';

describe('introspection (RFC 7662) and revocation (RFC 7009) of JWT access tokens', () => {
  let ts: TestServer;
  const agents: Record<string, string> = {};

  async function register(name: string) {
    const res = await ts.admin('POST', '/admin/agents', { id: agentId(name), scopes: ['read', 'write'], audiences: [API] });
    expect(res.status).toBe(201);
    agents[name] = res.body.client_secret;
  }
  const auth = (name: string) => ({ authorization: basic(agentId(name), agents[name]!) });
  async function token(name: string, scope = 'read') {
    const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', scope }, auth(name));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.access_token as string;
  }
  const introspect = (tok: string, as = 'rs') => postForm(`${ts.url}/token/introspection`, { token: tok }, auth(as));
  const revoke = (tok: string, as: string) => postForm(`${ts.url}/token/revocation`, { token: tok }, auth(as));

  beforeAll(async () => {
    ts = await startTestServer({ ACCESS_TOKEN_TTL: '2' });
    for (const name of ['caller', 'other', 'rs']) await register(name);
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('answers errors at introspection and revocation with Cache-Control: no-store', async () => {
    for (const path of ['/token/introspection', '/token/revocation']) {
      const res = await postForm(`${ts.url}${path}`, {}, auth('rs'));
      expect(res.status, path).toBe(400);
      expect(res.body.error, path).toBe('invalid_request');
      expect(res.headers.get('cache-control'), path).toBe('no-store');
    }
  });

  it('introspects a live token with its claims', async () => {
    const tok = await token('caller', 'read write');
    const claims = decodeJwt(tok);
    const res = await introspect(tok);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toMatch(/no-store/);
    expect(res.body).toMatchObject({
      active: true, iss: ts.issuer, sub: agentId('caller'), client_id: agentId('caller'), aud: API, scope: 'read write',
      jti: claims.jti, exp: claims.exp, iat: claims.iat, token_type: 'Bearer',
    });
  });

  it('requires client authentication to introspect or revoke', async () => {
    const tok = await token('caller');
    for (const path of ['/token/introspection', '/token/revocation']) {
      const res = await postForm(`${ts.url}${path}`, { token: tok });
      expect(res.status).toBe(400);
      expect(res.body.error).toBe('invalid_request');
      const bad = await postForm(`${ts.url}${path}`, { token: tok }, { authorization: basic(agentId('rs'), 'wrong') });
      expect(bad.status).toBe(401);
      expect(bad.body.error).toBe('invalid_client');
    }
    expect((await introspect(tok)).body.active).toBe(true);
  });

  it('answers exactly {"active": false} for a revoked token, and only the client it was issued to may revoke it', async () => {
    const tok = await token('caller');
    const refused = await revoke(tok, 'other');
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('unauthorized_client');
    expect((await introspect(tok)).body.active).toBe(true);

    const ok = await revoke(tok, 'caller');
    expect(ok.status).toBe(200);
    expect((await introspect(tok)).body).toStrictEqual({ active: false });
    // Revoking again, or revoking something unknown, is still a 200 (RFC 7009 §2.2).
    expect((await revoke(tok, 'caller')).status).toBe(200);
    expect((await revoke('not-a-token', 'caller')).status).toBe(200);

    const events = await ts.admin('GET', `/admin/events?client_id=${encodeURIComponent(agentId('caller'))}&decision=revoked`);
    expect(events.body.events.map((e: { jti: string }) => e.jti)).toContain(decodeJwt(tok).jti);
  });

  it('answers exactly {"active": false} for an expired token', async () => {
    const tok = await token('caller');
    expect((await introspect(tok)).body.active).toBe(true);
    await new Promise((r) => setTimeout(r, 3100));
    expect((await introspect(tok)).body).toStrictEqual({ active: false });
  });

  it('answers {"active": false} for forged tokens: a re-signed copy, a copy with a changed claim, garbage', async () => {
    const tok = await token('caller');
    const claims = decodeJwt(tok);
    const { privateKey } = await generateKeyPair('EdDSA');
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'forged' }).sign(privateKey);
    expect((await introspect(forged)).body).toStrictEqual({ active: false });

    const [h, , s] = tok.split('.');
    const widened = `${h}.${Buffer.from(JSON.stringify({ ...claims, scope: 'read write admin' })).toString('base64url')}.${s}`;
    expect((await introspect(widened)).body).toStrictEqual({ active: false });

    expect((await introspect('eyJhbGciOiJub25lIn0.e30.')).body).toStrictEqual({ active: false });
    expect((await introspect('opaque-garbage')).body).toStrictEqual({ active: false });
  });
});
