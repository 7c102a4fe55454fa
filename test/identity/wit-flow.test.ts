import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { client, discover } from '../support/oauth-client.js';
import { newAgentKey, postJson, TestIssuer, tokenWithWit, witByJoinToken, workloadHeaders } from '../support/workload.js';
import { ProtectedResource } from '../support/protected-resource.js';
import { computeAgentChecksum } from '../../src/identity/agent-checksum.js';

const API = 'https://tools.example.com/mcp';

describe('workload identity: WIT issuance, WIT + WPT client authentication, key-bound tokens', () => {
  let ts: TestServer;
  let issuer: TestIssuer;
  let rs: ProtectedResource;

  beforeAll(async () => {
    issuer = await new TestIssuer().start();
    ts = await startTestServer({ TRUSTED_ISSUERS: issuer.trustedIssuersEnv() });
    rs = await new ProtectedResource(ts.issuer, API).start();
  });
  afterAll(async () => {
    await rs?.close();
    await ts?.close();
    await issuer?.close();
  });

  it('runs the whole path: join token → WIT → WIT+WPT token request → DPoP call → renewal with a new key', async () => {
    const id = agentId('wit-agent');
    const reg = await ts.admin('POST', '/admin/agents', {
      id, token_endpoint_auth_method: 'wit', scopes: ['tools:call'], audiences: [API], attestors: [{ type: 'join_token' }, { type: 'wit' }],
    });
    expect(reg.status, JSON.stringify(reg.body)).toBe(201);
    expect(reg.body.client_secret).toBeUndefined();

    const key = await newAgentKey('EdDSA');
    const jt = await ts.admin('POST', `/admin/agents/${encodeURIComponent(id)}/join-tokens`);
    expect(jt.status).toBe(201);
    expect(jt.body.expires_at).toBeGreaterThan(Math.floor(Date.now() / 1000));
    const issued = await postJson(`${ts.url}/wit`, { agent_id: id, jwk: key.jwk, attestation: { type: 'join_token', token: jt.body.join_token } });
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    expect(issued.body.expires_in).toBe(3600);
    const wit = issued.body.wit as string;

    const { payload, protectedHeader } = await jwtVerify(wit, createRemoteJWKSet(new URL(`${ts.url}/jwks`)), { issuer: ts.issuer, typ: 'wit+jwt' });
    expect(protectedHeader.kid).toEqual(expect.any(String));
    expect(payload).toMatchObject({ iss: ts.issuer, sub: id, cnf: { jwk: { kty: 'OKP', crv: 'Ed25519', x: key.jwk.x, alg: 'EdDSA' } } });
    expect((payload.cnf as { jwk: Record<string, unknown> }).jwk).not.toHaveProperty('d');
    expect(payload.exp! - payload.iat!).toBe(3600);
    expect(payload.jti).toEqual(expect.any(String));

    const meta = await (await fetch(`${ts.url}/.well-known/oauth-authorization-server`)).json() as { token_endpoint_auth_methods_supported: string[] };
    expect(meta.token_endpoint_auth_methods_supported).toContain('attest_jwt_client_auth');

    const tok = await tokenWithWit(ts, id, wit, key);
    expect(tok.status, JSON.stringify(tok.body)).toBe(200);
    expect(tok.body.token_type).toBe('DPoP');
    const claims = decodeJwt(tok.body.access_token);
    expect(claims).toMatchObject({ sub: id, client_id: id, aud: API, scope: 'tools:call', cnf: { jkt: await calculateJwkThumbprint(key.jwk) } });

    // The resource server accepts the token with a DPoP proof from the agent's key (openid-client makes it)...
    const config = await discover(ts.issuer, id, client.None());
    const dpop = client.getDPoPHandle(config, { privateKey: key.privateKey, publicKey: key.publicKey });
    const ok = await client.fetchProtectedResource(config, tok.body.access_token, new URL(`${rs.url}/tools/search`), 'GET', undefined, undefined, { DPoP: dpop });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ sub: id });
    // ...and refuses it with a proof from another key, or as a bearer token.
    const other = await newAgentKey('EdDSA');
    const wrong = await client.fetchProtectedResource(config, tok.body.access_token, new URL(`${rs.url}/tools/search`), 'GET', undefined, undefined, {
      DPoP: client.getDPoPHandle(config, { privateKey: other.privateKey, publicKey: other.publicKey }),
    }).catch((e: { response?: Response }) => e.response!);
    expect(wrong.status).toBe(401);
    const bearer = await fetch(`${rs.url}/tools/search`, { headers: { authorization: `Bearer ${tok.body.access_token}` } });
    expect(bearer.status).toBe(401);

    // Renewal: the still-valid WIT and a WPT aimed at /wit get a new WIT for a new key.
    const next = await newAgentKey('ES256');
    const renewed = await postJson(`${ts.url}/wit`, { agent_id: id, jwk: next.jwk, attestation: { type: 'wit' } }, await workloadHeaders(ts, wit, key, '/wit'));
    expect(renewed.status, JSON.stringify(renewed.body)).toBe(200);
    const renewedClaims = decodeJwt(renewed.body.wit);
    expect(renewedClaims.sub).toBe(id);
    expect((renewedClaims.cnf as { jwk: { crv: string } }).jwk.crv).toBe('P-256');
    const tok2 = await tokenWithWit(ts, id, renewed.body.wit, next);
    expect(tok2.status, JSON.stringify(tok2.body)).toBe(200);
    expect(decodeJwt(tok2.body.access_token).cnf).toEqual({ jkt: await calculateJwkThumbprint(next.jwk) });

    // The records: WITs and the tokens obtained with them, linked.
    const records = await ts.admin('GET', `/admin/tokens?client_id=${encodeURIComponent(id)}`);
    const types = records.body.tokens.map((t: { type: string }) => t.type).sort();
    expect(types).toEqual(['access_token', 'access_token', 'wit', 'wit']);
    const lineage = await ts.admin('GET', `/admin/tokens/${payload.jti}/lineage`);
    expect(lineage.body.descendants.map((t: { jti: string }) => t.jti)).toEqual(expect.arrayContaining([claims.jti, renewedClaims.jti, decodeJwt(tok2.body.access_token).jti]));
  });

  it('issues a WIT on a JWT attestation from a trusted issuer, with the registered claims', async () => {
    const id = agentId('ci-agent');
    const sub = 'repo:example/agents:ref:refs/heads/main';
    expect((await ts.admin('POST', '/admin/agents', {
      id, token_endpoint_auth_method: 'wit', audiences: [API], attestors: [{ type: 'jwt', issuer: issuer.url, claims: { sub } }],
    })).status).toBe(201);
    const key = await newAgentKey('ES256');
    const res = await postJson(`${ts.url}/wit`, { agent_id: id, jwk: key.jwk, attestation: { type: 'jwt', token: await issuer.sign({ sub }) } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const tok = await tokenWithWit(ts, id, res.body.wit, key);
    expect(tok.status, JSON.stringify(tok.body)).toBe(200);
    expect(decodeJwt(tok.body.access_token).sub).toBe(id);
  });

  it('stamps the registered agent checksum into the WIT and the tokens obtained with it', async () => {
    const definition = { prompt: 'You search the docs.', tools: [{ name: 'search', description: 's' }, { name: 'fetch' }], config: { model: 'm', temperature: 0 } };
    const checksum = computeAgentChecksum(definition);
    // Same value whatever the order of tools and of object keys.
    expect(computeAgentChecksum({ config: { temperature: 0, model: 'm' }, tools: [{ name: 'fetch' }, { description: 's', name: 'search' }], prompt: 'You search the docs.' } as never)).toBe(checksum);
    const id = agentId('checksummed');
    await ts.admin('POST', '/admin/agents', { id, token_endpoint_auth_method: 'wit', audiences: [API], attestors: [{ type: 'join_token' }], agent_checksums: [checksum] });
    const key = await newAgentKey();
    const wit = await witByJoinToken(ts, id, key, { agent_checksum: checksum });
    expect(decodeJwt(wit).agent_checksum).toBe(checksum);
    const tok = await tokenWithWit(ts, id, wit, key);
    expect(decodeJwt(tok.body.access_token).agent_checksum).toBe(checksum);
  });

  it('binds to a separate DPoP key when the agent sends a proof of its own', async () => {
    const id = agentId('wit-dpop');
    await ts.admin('POST', '/admin/agents', { id, token_endpoint_auth_method: 'wit', audiences: [API], attestors: [{ type: 'join_token' }] });
    const key = await newAgentKey();
    const wit = await witByJoinToken(ts, id, key);
    const config = await discover(ts.issuer, id, client.None());
    const dpopKeys = await client.randomDPoPKeyPair('ES256');
    config[client.customFetch] = async (url, options) => {
      const headers = new Headers(options.headers);
      for (const [k, v] of Object.entries(await workloadHeaders(ts, wit, key, '/token'))) headers.set(k, v);
      return fetch(url, { ...options, headers } as RequestInit);
    };
    const tokens = await client.clientCredentialsGrant(config, {}, { DPoP: client.getDPoPHandle(config, dpopKeys) });
    expect(tokens.token_type.toLowerCase()).toBe('dpop');
    const jkt = await calculateJwkThumbprint(await crypto.subtle.exportKey('jwk', dpopKeys.publicKey) as never);
    expect(decodeJwt(tokens.access_token).cnf).toEqual({ jkt });
  });
});
