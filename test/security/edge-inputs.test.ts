import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { agentKeyPair, postForm } from '../support/oauth-client.js';
import { SignJWT } from 'jose';
import { signJsonText, withRawMember } from '../support/forgery.js';
import { AT, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';

const PARTNER = 'https://as.partner.example';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const partnerKey = generateKeyPairSync('ed25519');
const partnerJwk = { ...(partnerKey.publicKey.export({ format: 'jwk' }) as Record<string, string>), alg: 'EdDSA', kid: 'p1' };
const partnerGrant = (claims: Record<string, unknown>) => signJsonText(JSON.stringify({ alg: 'EdDSA', kid: 'p1', typ: 'JWT' }), JSON.stringify(claims), partnerKey.privateKey);

/** Inputs the fuzzer (fuzz.test.ts) found answered with a 500, each answered as a refusal now. */
describe('edge inputs answered as refusals, never a 500', () => {
  let ts: TestServer;
  let agent: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer({ PARTNER_DOMAINS: JSON.stringify([{ issuer: PARTNER, jwks: { keys: [partnerJwk] }, subject_map: { 'user:alice': `spiffe://${TRUST_DOMAIN}/users/alice` } }]) });
    agent = await registerSecretAgent(ts, { id: agentId('edge'), grant_types: ['client_credentials', TOKEN_EXCHANGE, JWT_BEARER], scopes: ['read'], audiences: ['https://api.example'] });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('NUL characters (which PostgreSQL can\'t store) in ids, lookups, queries and registrations', async () => {
    expect((await ts.admin('GET', '/admin/agents/%00')).status).toBe(404);
    expect((await ts.admin('PATCH', '/admin/agents/a%00b', { scopes: ['read'] })).status).toBe(404);
    expect((await ts.admin('DELETE', '/admin/agents/%00')).status).toBe(404);
    expect((await ts.admin('GET', '/admin/tokens/%00/lineage')).status).toBe(404);
    expect((await ts.admin('GET', '/admin/tokens?client_id=%00')).body.error).toBe('invalid_request');
    expect((await ts.admin('GET', '/admin/events?client_id=a%00')).status).toBe(400);
    expect((await ts.admin('GET', '/admin/agents?after=%00')).status).toBe(400);
    const reg = await ts.admin('POST', '/admin/agents', { id: agentId('nul'), attestors: [{ type: 'jwt', issuer: 'x', claims: { sub: 'a\u0000' } }] });
    expect(reg.status).toBe(400);
    const keyed = await ts.admin('POST', '/admin/agents', { id: agentId('nul'), scopes: ['read'], token_exchange: { 'a\u0000': true } });
    expect(keyed.status).toBe(400);
    expect((await ts.admin('GET', `/admin/agents/${encodeURIComponent(agentId('nul'))}`)).status).toBe(404);
    // At the OAuth endpoints: an opaque token, a client id, a refusal's record.
    const introspected = await postForm(`${ts.url}/token/introspection`, { token: 'a\u0000b' }, agent.auth);
    expect(introspected.status).toBe(200);
    expect(introspected.body).toEqual({ active: false });
    const unknown = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: 'a\u0000b', client_secret: 'x' });
    expect(unknown.status).toBe(401);
    const events = await ts.admin('GET', '/admin/events?decision=refused');
    expect(events.status).toBe(200);
  });

  it('jwt-bearer assertions with a jti that is no string, or an exp no bigint holds', async () => {
    const now = Math.floor(Date.now() / 1000);
    const base = { iss: PARTNER, sub: 'user:alice', aud: ts.issuer, iat: now, exp: now + 60 };
    for (const jti of [{ a: 1 }, 42, ['x'], '']) {
      const res = await agent.token({ grant_type: JWT_BEARER, assertion: partnerGrant({ ...base, jti }) });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error).toBe('invalid_grant');
    }
    // Expired 2 s ago, inside the clock tolerance: no lifetime left to give the access token.
    const justExpired = await agent.token({ grant_type: JWT_BEARER, assertion: partnerGrant({ ...base, jti: 'j-just-expired', exp: now - 2 }) });
    expect(justExpired.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/expired/) });
    const objectSub = await agent.token({ grant_type: JWT_BEARER, assertion: partnerGrant({ ...base, sub: { id: 'user:alice' }, jti: 'j-object-sub' }) });
    expect(objectSub.body.error).toBe('invalid_grant');
    // Far-future and fractional expiry: accepted, and still used once.
    for (const [jti, exp] of [['j-far', 1e29], ['j-frac', now + 60.5]] as const) {
      const assertion = partnerGrant({ ...base, jti, exp });
      const first = await agent.token({ grant_type: JWT_BEARER, assertion });
      expect(first.status, JSON.stringify(first.body)).toBe(200);
      const replay = await agent.token({ grant_type: JWT_BEARER, assertion });
      expect(replay.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/already used/) });
    }
  });

  it('token types named like Object.prototype members', async () => {
    const own = (await agent.token({ grant_type: 'client_credentials' })).body.access_token as string;
    for (const type of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
      const subject = await agent.token({ grant_type: TOKEN_EXCHANGE, subject_token: own, subject_token_type: type });
      expect(subject.status, JSON.stringify(subject.body)).toBe(400);
      expect(subject.body.error).toBe('invalid_request');
      const actor = await agent.token({ grant_type: TOKEN_EXCHANGE, subject_token: own, subject_token_type: AT, actor_token: own, actor_token_type: type });
      expect(actor.status, JSON.stringify(actor.body)).toBe(400);
      expect(actor.body.error).toBe('invalid_request');
    }
  });

  it('OPTIONS on the OAuth endpoints without a CORS preflight: 204 with Allow, not an empty 404', async () => {
    for (const path of ['/token', '/token/introspection', '/.well-known/openid-configuration', '/.well-known/oauth-authorization-server']) {
      const res = await fetch(`${ts.url}${path}`, { method: 'OPTIONS' });
      expect(res.status, path).toBe(204);
      expect(res.headers.get('allow')).toMatch(/OPTIONS/);
    }
    const preflight = await fetch(`${ts.url}/token`, { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-methods')).toMatch(/POST/);
  });

  it('a client assertion signed with the client\'s own key whose header or claims nest JSON too deeply: invalid_client, recorded', async () => {
    const id = agentId('edge-deep-assertion');
    const keys = await agentKeyPair('EdDSA');
    expect((await ts.admin('POST', '/admin/agents', { id, scopes: ['read'], audiences: ['https://api.example'], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.jwk] } })).status).toBe(201);
    // 15,000 levels of arrays, as JSON text (JSON.stringify itself can't write them): deeper than a structured
    // clone's recursion goes, inside the body limit.
    const deep = `${'['.repeat(15_000)}${']'.repeat(15_000)}`;
    const assertion = (where: 'header' | 'claims', jti: string) => {
      const now = Math.floor(Date.now() / 1000);
      const header = { alg: 'EdDSA', kid: keys.jwk.kid };
      const claims = { iss: id, sub: id, aud: ts.issuer, jti, iat: now, exp: now + 60 };
      return signJsonText(
        where === 'header' ? withRawMember(header, 'deep', deep) : JSON.stringify(header),
        where === 'claims' ? withRawMember(claims, 'deep', deep) : JSON.stringify(claims),
        keys.privateKey,
      );
    };
    for (const where of ['header', 'claims'] as const) {
      const res = await postForm(`${ts.url}/token`, {
        grant_type: 'client_credentials', client_id: id, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion(where, `deep-${where}`),
      });
      expect(res.status, `${where}: ${JSON.stringify(res.body)}`).toBe(401);
      expect(res.body).toEqual({ error: 'invalid_client', error_description: expect.stringMatching(/nested too deeply/) });
    }
    // Client authentication at introspection and revocation too.
    for (const path of ['/token/introspection', '/token/revocation']) {
      const res = await postForm(`${ts.url}${path}`, {
        token: 'x', client_id: id, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion('claims', `deep${path}`),
      });
      expect(res.status, `${path}: ${JSON.stringify(res.body)}`).toBe(401);
      expect(res.body.error).toBe('invalid_client');
    }
    const refused = await ts.admin('GET', `/admin/events?decision=refused&client_id=${encodeURIComponent(id)}`);
    expect(refused.body.events.map((e: { action: string; reason: string }) => `${e.action} ${e.reason}`))
      .toEqual(['revocation invalid_client', 'introspection invalid_client', 'token:client_credentials invalid_client', 'token:client_credentials invalid_client']);
    // The same client, with an ordinary assertion, still gets its token.
    const ok = await postForm(`${ts.url}/token`, {
      grant_type: 'client_credentials', client_id: id, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await new SignJWT({}).setProtectedHeader({ alg: 'EdDSA', kid: keys.jwk.kid! }).setIssuer(id).setSubject(id).setAudience(ts.issuer).setJti('plain').setIssuedAt().setExpirationTime('1m').sign(keys.privateKey),
    });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
  });
});
