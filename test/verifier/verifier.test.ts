import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Koa from 'koa';
import express from 'express';
import { decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { client, discover, postForm } from '../support/oauth-client.js';
import { registerSecretAgent, exchange, AT, TXN, type SecretAgent } from '../support/agents.js';
import { newAgentKey, witByJoinToken, wpt } from '../support/workload.js';
import { signAsServer } from '../support/forgery.js';
import { expressGuard, koaGuard, protectedResourceMetadata, PROTECTED_RESOURCE_METADATA_PATH, Verifier } from '../../src/verifier/index.js';
import * as oauth from 'oauth4webapi';

const API = 'https://api.example.com';

async function listen(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('the verifier library and its middleware', () => {
  let ts: TestServer;
  let agent: SecretAgent;
  let other: SecretAgent;
  let koaApp: { server: Server; url: string };
  let expressApp: { server: Server; url: string };
  let verifier: Verifier;

  const call = (url: string, headers: Record<string, string> = {}, method = 'GET') => fetch(url, { method, headers });
  const token = async (a: SecretAgent = agent, form: Record<string, string> = {}) => (await a.token({ grant_type: 'client_credentials', ...form })).body.access_token as string;

  beforeAll(async () => {
    ts = await startTestServer();
    agent = await registerSecretAgent(ts, { id: agentId('caller'), scopes: ['tools:read', 'tools:write'], audiences: [API, 'https://other.example'], attestors: [{ type: 'join_token' }], grant_types: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'] });
    other = await registerSecretAgent(ts, { id: agentId('introspector'), audiences: [API] });
    verifier = new Verifier({ issuer: ts.issuer, audience: API, trustDomain: TRUST_DOMAIN, jwksCooldownMs: 60_000 });
    const metadata = protectedResourceMetadata({ resource: API, issuer: ts.issuer, scopes: ['tools:read', 'tools:write'] });
    const koa = new Koa();
    koa.use(async (ctx, next) => {
      if (ctx.path === PROTECTED_RESOURCE_METADATA_PATH) {
        ctx.body = metadata;
        return;
      }
      await next();
    });
    koa.use(koaGuard(verifier, {
      requiredScopes: (req) => (new URL(req.url).pathname.startsWith('/write') ? ['tools:write'] : ['tools:read']),
      resourceMetadataUrl: `${API}${PROTECTED_RESOURCE_METADATA_PATH}`,
    }));
    koa.use((ctx) => {
      ctx.body = ctx.state.agent;
    });
    koaApp = await listen(koa.callback() as unknown as RequestListener);
    const ex = express();
    ex.use(expressGuard(verifier, { requiredScopes: ['tools:read'] }));
    ex.get('/', (req, res) => {
      res.json((req as unknown as { agent: unknown }).agent);
    });
    expressApp = await listen(ex as unknown as RequestListener);
  });
  afterAll(async () => {
    await new Promise((r) => koaApp?.server.close(r));
    await new Promise((r) => expressApp?.server.close(r));
    await ts?.close();
  });

  it('accepts a bearer token and gives the typed result; serves RFC 9728 metadata', async () => {
    const res = await call(`${koaApp.url}/read`, { authorization: `Bearer ${await token()}` });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ accessToken: { type: 'access_token', subject: agent.id, clientId: agent.id, scopes: ['tools:read', 'tools:write'], actors: [] } });
    const meta = await (await call(`${koaApp.url}${PROTECTED_RESOURCE_METADATA_PATH}`)).json();
    expect(meta).toMatchObject({ resource: API, authorization_servers: [ts.issuer] });
    const viaExpress = await call(`${expressApp.url}/`, { authorization: `Bearer ${await token()}` });
    expect(viaExpress.status).toBe(200);
    expect((await call(`${expressApp.url}/`)).status).toBe(401);
  });

  it('serves RFC 9728 metadata at the path-inserted URL of a resource with a path, and names it in challenges (koa and Express)', async () => {
    const resource = `${API}/mcp`;
    const opts = { requiredScopes: ['tools:read'], metadata: { resource, issuer: ts.issuer, scopes: ['tools:read'] } };
    const pathVerifier = new Verifier({ issuer: ts.issuer, audience: resource });
    const koa = new Koa();
    koa.use(koaGuard(pathVerifier, opts));
    koa.use((ctx) => {
      ctx.body = 'ok';
    });
    const ex = express();
    ex.use(expressGuard(pathVerifier, opts));
    ex.use((_req, res) => {
      res.send('ok');
    });
    const apps = [await listen(koa.callback() as unknown as RequestListener), await listen(ex as unknown as RequestListener)];
    try {
      for (const app of apps) {
        const refused = await call(`${app.url}/mcp`);
        expect(refused.status).toBe(401);
        expect(refused.headers.get('www-authenticate')).toBe(`Bearer scope="tools:read", resource_metadata="${API}/.well-known/oauth-protected-resource/mcp"`);
        // oauth4webapi derives the metadata URL from the resource identifier and checks the `resource` it names.
        const toApp: typeof fetch = (input, init) => fetch(String(input instanceof Request ? input.url : input).replace(API, app.url), init);
        const res = await oauth.resourceDiscoveryRequest(new URL(resource), { [oauth.customFetch]: toApp });
        expect(res.url).toBe(`${app.url}/.well-known/oauth-protected-resource/mcp`);
        expect(await oauth.processResourceDiscoveryResponse(new URL(resource), res)).toMatchObject({ resource, authorization_servers: [ts.issuer], scopes_supported: ['tools:read'] });
        expect(await (await call(`${app.url}${PROTECTED_RESOURCE_METADATA_PATH}`)).json()).toMatchObject({ resource });
        expect((await call(`${app.url}/.well-known/oauth-protected-resource/other`)).status).toBe(401);
      }
    } finally {
      for (const app of apps) await new Promise((r) => app.server.close(r));
    }
  });

  it('refuses a missing token, other token types, another audience, expiry and forgeries with 401 invalid_token', async () => {
    const missing = await call(`${koaApp.url}/read`);
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toBe(`Bearer scope="tools:read", resource_metadata="${API}${PROTECTED_RESOURCE_METADATA_PATH}"`);

    const now = Math.floor(Date.now() / 1000);
    const base = { iss: ts.issuer, sub: agent.id, client_id: agent.id, aud: API, scope: 'tools:read', jti: 'j', iat: now, exp: now + 300 };
    const { privateKey } = await generateKeyPair('EdDSA');
    const realKid = decodeJwt(await token()) && (JSON.parse(Buffer.from((await token()).split('.')[0]!, 'base64url').toString()) as { kid: string }).kid;
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: { kid: string; x: string }[] };
    const cases: [string, string][] = [
      ['another audience', await token(agent, { resource: 'https://other.example' })],
      ['expired', await signAsServer(ts, { ...base, iat: now - 600, exp: now - 300 })],
      ['not yet valid', await signAsServer(ts, { ...base, nbf: now + 600 })],
      ['another issuer', await signAsServer(ts, { ...base, iss: 'https://evil.example' })],
      ['WIT as bearer', await signAsServer(ts, { ...base }, { typ: 'wit+jwt' })],
      ['unknown kid', await new SignJWT(base).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'made-up' }).sign(privateKey)],
      ['key not in the JWKS', await new SignJWT(base).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: realKid }).sign(privateKey)],
      ['alg none', `${b64({ alg: 'none', typ: 'at+jwt', kid: realKid })}.${b64(base)}.`],
      ['HMAC with the public key', await new SignJWT(base).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: realKid }).sign(Buffer.from(jwks.keys[0]!.x, 'base64url'))],
      ['garbage', 'not.a.jwt'],
    ];
    const txn = await exchange(agent, { subject_token: await token(), subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'tools:read' });
    cases.push(['Txn-Token in Authorization', txn.body.access_token]);
    for (const [what, t] of cases) {
      const res = await call(`${koaApp.url}/read`, { authorization: `Bearer ${t}` });
      expect(res.status, what).toBe(401);
      expect(res.headers.get('www-authenticate'), what).toMatch(/^Bearer error="invalid_token"/);
      expect((await res.json() as { error: string }).error, what).toBe('invalid_token');
    }
  });

  it('answers 403 insufficient_scope with the scope needed', async () => {
    const readOnly = await token(agent, { scope: 'tools:read' });
    const res = await call(`${koaApp.url}/write`, { authorization: `Bearer ${readOnly}` });
    expect(res.status).toBe(403);
    expect(res.headers.get('www-authenticate')).toMatch(/error="insufficient_scope".*scope="tools:write"/);
  });

  it('requires a matching, fresh, single-use DPoP proof for a bound token', async () => {
    const config = await discover(ts.issuer, agent.id, client.ClientSecretBasic(agent.secret));
    const keys = await client.randomDPoPKeyPair('ES256');
    const handle = client.getDPoPHandle(config, keys);
    const bound = (await client.clientCredentialsGrant(config, {}, { DPoP: handle })).access_token;
    const url = new URL(`${koaApp.url}/read`);
    const ok = await client.fetchProtectedResource(config, bound, url, 'GET', undefined, undefined, { DPoP: handle });
    expect(ok.status).toBe(200);

    // Bound token as a bearer token; DPoP scheme without a proof.
    const asBearer = await call(url.href, { authorization: `Bearer ${bound}` });
    expect(asBearer.status).toBe(401);
    expect(asBearer.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_token"/);
    const noProof = await call(url.href, { authorization: `DPoP ${bound}` });
    expect(noProof.status).toBe(401);
    expect(noProof.headers.get('www-authenticate')).toMatch(/^DPoP error="invalid_dpop_proof"/);

    // A proof made by hand, so it can be replayed and varied.
    const jwk = await exportJWK(keys.publicKey);
    const { createHash } = await import('node:crypto');
    const ath = createHash('sha256').update(bound).digest('base64url');
    const proof = (claims: Record<string, unknown>, key = keys.privateKey, pub = jwk) => new SignJWT({ htm: 'GET', htu: url.href, iat: Math.floor(Date.now() / 1000), jti: crypto.randomUUID(), ath, ...claims })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: pub }).sign(key);
    const good = await proof({});
    expect((await call(url.href, { authorization: `DPoP ${bound}`, dpop: good })).status).toBe(200);
    const replayed = await call(url.href, { authorization: `DPoP ${bound}`, dpop: good });
    expect(replayed.status).toBe(401);
    expect((await replayed.json() as { error_description: string }).error_description).toMatch(/replayed/);
    const stranger = await generateKeyPair('ES256');
    for (const [what, p] of [
      ['another method', await proof({ htm: 'POST' })],
      ['another URL', await proof({ htu: `${koaApp.url}/write` })],
      ['another token', await proof({ ath: 'x' })],
      ['stale', await proof({ iat: Math.floor(Date.now() / 1000) - 3600 })],
      ['another key', await proof({}, stranger.privateKey, await exportJWK(stranger.publicKey))],
    ] as const) {
      const res = await call(url.href, { authorization: `DPoP ${bound}`, dpop: p });
      expect(res.status, what).toBe(401);
      expect((await res.json() as { error: string }).error, what).toBe('invalid_dpop_proof');
    }
  });

  it('answers a DPoP proof whose htu is no URL, and a request URL that does not parse, with a refusal, never an exception', async () => {
    const { calculateJwkThumbprint } = await import('jose');
    const { createHash } = await import('node:crypto');
    const keys = await generateKeyPair('ES256');
    const jwk = await exportJWK(keys.publicKey);
    const now = Math.floor(Date.now() / 1000);
    const bound = await signAsServer(ts, { iss: ts.issuer, sub: agent.id, aud: API, scope: 'tools:read', jti: 'bound-1', iat: now, exp: now + 60, cnf: { jkt: await calculateJwkThumbprint(jwk) } });
    const ath = createHash('sha256').update(bound).digest('base64url');
    const proof = (htu: string) => new SignJWT({ htm: 'GET', htu, iat: now, jti: crypto.randomUUID(), ath }).setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(keys.privateKey);
    for (const htu of ['not a url', 'http://a b/read', '']) {
      await expect(verifier.verifyRequest({ method: 'GET', url: `${API}/read`, headers: { authorization: `DPoP ${bound}`, dpop: await proof(htu) } }))
        .rejects.toMatchObject({ name: 'VerificationError', code: 'invalid_dpop_proof', status: 401 });
    }
    await expect(verifier.verifyRequest({ method: 'GET', url: 'http://a b/read', headers: { authorization: `DPoP ${bound}`, dpop: await proof(`${API}/read`) } }))
      .rejects.toMatchObject({ name: 'VerificationError', code: 'invalid_request', status: 400 });
    const key = await newAgentKey();
    const wit = await witByJoinToken(ts, agent.id, key);
    await expect(verifier.verifyRequest({ method: 'GET', url: 'http://a b/read', headers: { 'workload-identity-token': wit, 'workload-proof-token': await wpt(wit, key, `${API}/read`) } }))
      .rejects.toMatchObject({ name: 'VerificationError', code: 'invalid_request', status: 400 });
    // Control: the same token with a proof for the URL called.
    await expect(verifier.verifyRequest({ method: 'GET', url: `${API}/read`, headers: { authorization: `DPoP ${bound}`, dpop: await proof(`${API}/read`) } }))
      .resolves.toMatchObject({ accessToken: { subject: agent.id } });
  });

  it('accepts Txn-Tokens and WIT + WPT pairs, and refuses a replayed WPT', async () => {
    const txn = (await exchange(agent, { subject_token: await token(), subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'tools:read' })).body.access_token as string;
    const res = await call(`${koaApp.url}/read`, { 'txn-token': txn });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ txnToken: { type: 'txn_token', subject: agent.id, txn: decodeJwt(txn).txn } });

    const key = await newAgentKey();
    const wit = await witByJoinToken(ts, agent.id, key);
    const at = await token();
    const proof = await wpt(wit, key, `${koaApp.url}/read`, { accessToken: at });
    const headers = { authorization: `Bearer ${at}`, 'workload-identity-token': wit, 'workload-proof-token': proof };
    const both = await call(`${koaApp.url}/read`, headers);
    expect(both.status).toBe(200);
    expect(await both.json()).toMatchObject({ workload: { type: 'wit', subject: agent.id }, accessToken: { subject: agent.id } });
    expect((await call(`${koaApp.url}/read`, headers)).status).toBe(401);
    const otherUrl = await call(`${koaApp.url}/read`, { ...headers, 'workload-proof-token': await wpt(wit, key, `${koaApp.url}/elsewhere`, { accessToken: at }) });
    expect(otherUrl.status).toBe(401);
  });

  it('checks revocation by introspection when asked to', async () => {
    const checking = new Verifier({ issuer: ts.issuer, audience: API, introspection: { clientId: other.id, clientSecret: other.secret, cacheSeconds: 0 } });
    const t = await token();
    const input = { authorization: `Bearer ${t}`, method: 'GET', url: `${API}/x` };
    await expect(checking.verifyAccessToken(input)).resolves.toMatchObject({ subject: agent.id });
    expect((await postForm(`${ts.url}/token/revocation`, { token: t }, agent.auth)).status).toBe(200);
    await expect(checking.verifyAccessToken(input)).rejects.toMatchObject({ code: 'invalid_token', message: expect.stringMatching(/revoked/) });
    // Offline verification alone still accepts it until it expires.
    await expect(verifier.verifyAccessToken(input)).resolves.toMatchObject({ subject: agent.id });
  });

  it('survives a key rotation: the first token with the new kid triggers one JWKS refetch; a made-up kid does not refetch again', async () => {
    const before = await token();
    await expect(verifier.verifyAccessToken({ authorization: `Bearer ${before}`, method: 'GET', url: API })).resolves.toBeDefined();
    expect((await ts.admin('POST', '/admin/keys/rotate')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1100)); // the refetch rate limit, after the made-up kids above
    const after = await token();
    await expect(verifier.verifyAccessToken({ authorization: `Bearer ${after}`, method: 'GET', url: API })).resolves.toMatchObject({ subject: agent.id });
    await expect(verifier.verifyAccessToken({ authorization: `Bearer ${before}`, method: 'GET', url: API })).resolves.toBeDefined();

    let fetches = 0;
    const counting = new Verifier({ issuer: ts.issuer, audience: API, fetch: (async (...args: Parameters<typeof fetch>) => { fetches++; return fetch(...args); }) as typeof fetch });
    await counting.verifyAccessToken({ authorization: `Bearer ${after}`, method: 'GET', url: API });
    const base = fetches;
    const { privateKey } = await generateKeyPair('EdDSA');
    const madeUp = await new SignJWT({ iss: ts.issuer, sub: 'x', aud: API, exp: Math.floor(Date.now() / 1000) + 60 }).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'made-up-2' }).sign(privateKey);
    for (let i = 0; i < 5; i++) await expect(counting.verifyAccessToken({ authorization: `Bearer ${madeUp}`, method: 'GET', url: API })).rejects.toMatchObject({ code: 'invalid_token' });
    expect(fetches - base).toBe(1);
  });
});
