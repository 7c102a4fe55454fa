import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Koa from 'koa';
import type { JWK } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { koaGuard, Verifier } from '../../src/verifier/index.js';
import { BISCUIT_TOKEN_TYPE, delegate } from '../../src/tokens/biscuit.js';
import { authority, mint, privateJwk, publicOf, rootKey } from '../support/biscuit.js';

const API = 'https://api.example.com';

/** A resource server protected by the verifier middleware accepts Biscuit chains as bearer tokens. */
describe('the verifier library with Biscuit chains', () => {
  let ts: TestServer;
  let orchestrator: SecretAgent;
  let orchKey: JWK;
  let app: { server: Server; url: string };
  let jwks: { keys: JWK[] };

  beforeAll(async () => {
    ts = await startTestServer();
    orchKey = await privateJwk();
    orchestrator = await registerSecretAgent(ts, {
      id: agentId('orchestrator'), grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['tools:read', 'tools:write'], audiences: [API],
      jwks: { keys: [{ ...publicOf(orchKey), alg: 'EdDSA' }] }, token_exchange: { max_budget: 100 },
    });
    const verifier = new Verifier({ issuer: ts.issuer, audience: API, biscuit: { revocationMaxAgeMs: 0 } });
    const koa = new Koa();
    koa.use(koaGuard(verifier, { requiredScopes: (req) => (new URL(req.url).pathname.startsWith('/write') ? ['tools:write'] : ['tools:read']) }));
    koa.use((ctx) => {
      ctx.body = ctx.state.agent;
    });
    const server = createServer(koa.callback() as unknown as RequestListener);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    app = { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
    jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: JWK[] };
  });
  afterAll(async () => {
    app?.server.close();
    await ts?.close();
  });

  const minted = async (scope = 'tools:read tools:write') => {
    const own = (await orchestrator.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const res = await exchange(orchestrator, { subject_token: own, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.access_token as string;
  };
  const call = (path: string, token: string) => fetch(`${app.url}${path}`, { headers: { authorization: `Bearer ${token}` } });

  it('accepts a delegated chain within its tools and reports the chain', async () => {
    const token = await delegate(await minted(), { delegate: agentId('reader'), context: 'read only', tools: ['tools:read'] }, orchKey, jwks);
    const ok = await call('/read', token);
    expect(ok.status).toBe(200);
    const body = await ok.json() as { accessToken: Record<string, unknown> };
    expect(body.accessToken).toMatchObject({ type: 'biscuit', subject: orchestrator.id, clientId: agentId('reader'), actors: [agentId('reader'), orchestrator.id], scopes: ['tools:read'] });
    const refused = await call('/write', token);
    expect(refused.status).toBe(403);
    expect(refused.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
  });

  it('refuses a chain from another root, a forged one, and one revoked a moment ago', async () => {
    const foreign = await mint(await rootKey(Number(jwks.keys.find((k) => k.kid?.startsWith('biscuit-'))!.kid!.slice(8))), authority(orchestrator.id, orchKey, { audiences: [API], rights: ['tools:read'] }));
    const r1 = await call('/read', foreign);
    expect(r1.status).toBe(401);
    expect(r1.headers.get('www-authenticate')).toContain('error="invalid_token"');
    expect((await call('/read', await mint(await rootKey(12345), authority(orchestrator.id, orchKey)))).status).toBe(401);

    const token = await minted();
    expect((await call('/read', token)).status).toBe(200);
    const flipped = `${token.slice(0, 60)}${token[60] === 'A' ? 'B' : 'A'}${token.slice(61)}`;
    expect((await call('/read', flipped)).status).toBe(401);
    const res = await fetch(`${ts.url}/token/revocation`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...orchestrator.auth }, body: new URLSearchParams({ token }).toString() });
    expect(res.status).toBe(200);
    const after = await call('/read', token);
    expect(after.status).toBe(401);
    expect(after.headers.get('www-authenticate')).toContain('revoked');
  });

  it('never takes the Biscuit root key for a JWT signing key', async () => {
    const { SignJWT, importJWK } = await import('jose');
    // Signed with the real root key, as only a stolen key could: still refused.
    const root = ts.server.keys.activeBiscuitRoot();
    const forged = await new SignJWT({ scope: 'tools:read', client_id: orchestrator.id }).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: jwks.keys.find((k) => k.kid?.startsWith('biscuit-'))!.kid! })
      .setIssuer(ts.issuer).setSubject(orchestrator.id).setAudience(API).setIssuedAt().setExpirationTime('1m').sign(await importJWK(root.privateJwk, 'EdDSA'));
    expect((await call('/read', forged)).status).toBe(401);
  });

  it('applies the verifier\'s own Datalog policy after the chain\'s checks', async () => {
    // This resource allows only reads, whatever the chain would allow, and only for the orchestrator's transactions.
    const policy = { code: 'allow if tool({read}); deny if true;', params: { read: 'tools:read' } };
    const strict = new Verifier({ issuer: ts.issuer, audience: API, biscuit: { policy, revocationMaxAgeMs: 0 } });
    const token = await minted();
    await expect(strict.verifyBiscuit(token, { tools: ['tools:read'] })).resolves.toMatchObject({ type: 'biscuit' });
    await expect(strict.verifyBiscuit(token, { tools: ['tools:write'] })).rejects.toMatchObject({ status: 401, message: expect.stringContaining('no allow policy') });
    // A string with quotes in the policy's parameters stays a value.
    const injected = new Verifier({ issuer: ts.issuer, audience: API, biscuit: { policy: { code: 'allow if tool({t});', params: { t: 'x"); allow if true; //' } } } });
    await expect(injected.verifyBiscuit(token, { tools: ['tools:read'] })).rejects.toMatchObject({ status: 401 });
  });
});
