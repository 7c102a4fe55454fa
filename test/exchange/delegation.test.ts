import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { client, discover, postForm } from '../support/oauth-client.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';

const ORCH_API = 'https://orchestrator.example/api';
const SPEC_API = 'https://specialist.example/api';
const TOOL = 'https://tools.example/mcp';
const GRANTS = ['client_credentials', TOKEN_EXCHANGE];

describe('token exchange: delegated access tokens and Transaction Tokens', () => {
  let ts: TestServer;
  let frontend: SecretAgent;
  let orchestrator: SecretAgent;
  let specialist: SecretAgent;
  let tool: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    frontend = await registerSecretAgent(ts, { id: agentId('frontend'), scopes: ['orders:read', 'orders:write', 'tools:search'], audiences: [ORCH_API] });
    orchestrator = await registerSecretAgent(ts, {
      id: agentId('orchestrator'), grant_types: GRANTS, scopes: ['orders:read', 'tools:search'], audiences: [SPEC_API], token_exchange: { may_act_for_others: true },
    });
    specialist = await registerSecretAgent(ts, {
      id: agentId('specialist'), grant_types: GRANTS, scopes: ['tools:search'], audiences: [TOOL], token_exchange: { may_act_for_others: true },
    });
    tool = await registerSecretAgent(ts, {
      id: agentId('tool'), grant_types: GRANTS, scopes: ['tools:search'], audiences: [TOOL], token_exchange: { may_act_for_others: true },
    });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('advertises the grant and the token types', async () => {
    const meta = await (await fetch(`${ts.url}/.well-known/oauth-authorization-server`)).json() as Record<string, string[]>;
    expect(meta.grant_types_supported).toEqual(expect.arrayContaining(['client_credentials', TOKEN_EXCHANGE]));
    expect(meta.token_exchange_requested_token_types_supported).toEqual([AT, TXN, 'urn:ietf:params:oauth:token-type:jwt', 'urn:agent-sts:params:oauth:token-type:biscuit']);
    expect(meta.grant_types_supported).toContain('urn:ietf:params:oauth:grant-type:jwt-bearer');
    expect(meta.token_exchange_subject_token_types_supported).toEqual(expect.arrayContaining([AT, TXN]));
  });

  it('narrows at every hop, nests the actor chain, records the lineage and revokes in cascade', async () => {
    const t0 = (await frontend.token({ grant_type: 'client_credentials' })).body.access_token as string;

    // Hop 1 with openid-client: the orchestrator acts for the frontend, proving itself with its own token.
    const orchConfig = await discover(ts.issuer, orchestrator.id, client.ClientSecretBasic(orchestrator.secret));
    const orchOwn = await client.clientCredentialsGrant(orchConfig);
    const hop1 = await client.genericGrantRequest(orchConfig, TOKEN_EXCHANGE, {
      subject_token: t0, subject_token_type: AT, actor_token: orchOwn.access_token, actor_token_type: AT, resource: SPEC_API,
    });
    expect(hop1.issued_token_type).toBe(AT);
    expect(hop1.token_type.toLowerCase()).toBe('bearer');
    expect(hop1.refresh_token).toBeUndefined();
    const jwks = createRemoteJWKSet(new URL(orchConfig.serverMetadata().jwks_uri!));
    const { payload: p1 } = await jwtVerify(hop1.access_token, jwks, { issuer: ts.issuer, audience: SPEC_API, typ: 'at+jwt' });
    expect(p1).toMatchObject({ sub: frontend.id, client_id: orchestrator.id, aud: SPEC_API, scope: 'orders:read tools:search', act: { sub: orchestrator.id } });
    expect(p1.exp).toBeLessThanOrEqual(decodeJwt(t0).exp!);

    // Hop 2: the specialist narrows again.
    const specConfig = await discover(ts.issuer, specialist.id, client.ClientSecretBasic(specialist.secret));
    const hop2 = await client.genericGrantRequest(specConfig, TOKEN_EXCHANGE, { subject_token: hop1.access_token, subject_token_type: AT, scope: 'tools:search', audience: TOOL });
    const { payload: p2 } = await jwtVerify(hop2.access_token, jwks, { issuer: ts.issuer, audience: TOOL, typ: 'at+jwt' });
    expect(p2).toMatchObject({ sub: frontend.id, client_id: specialist.id, aud: TOOL, scope: 'tools:search', act: { sub: specialist.id, act: { sub: orchestrator.id } } });
    expect(hop2.scope).toBe('tools:search');

    // Lineage: the whole tree from either end.
    const j0 = decodeJwt(t0).jti!;
    const j1 = p1.jti!;
    const j2 = p2.jti!;
    const fromLeaf = await ts.admin('GET', `/admin/tokens/${j2}/lineage`);
    expect(fromLeaf.body.ancestors.map((t: { jti: string }) => t.jti)).toEqual([j0, j1]);
    expect(fromLeaf.body.token).toMatchObject({ parent_jti: j1, actor: { sub: specialist.id, act: { sub: orchestrator.id } } });
    const fromRoot = await ts.admin('GET', `/admin/tokens/${j0}/lineage`);
    expect(fromRoot.body.descendants.map((t: { jti: string }) => t.jti)).toEqual([j1, j2]);

    // Revoking the root makes every token exchanged from it inactive.
    const introspect = (t: string) => postForm(`${ts.url}/token/introspection`, { token: t }, tool.auth);
    expect((await introspect(hop2.access_token)).body.active).toBe(true);
    expect((await postForm(`${ts.url}/token/revocation`, { token: t0 }, frontend.auth)).status).toBe(200);
    for (const t of [t0, hop1.access_token, hop2.access_token]) expect((await introspect(t)).body).toStrictEqual({ active: false });
    // And a revoked token can no longer be exchanged.
    const again = await exchange(specialist, { subject_token: hop1.access_token, subject_token_type: AT });
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
  });

  it('exchanges into a Transaction Token, and replaces it keeping txn, sub and aud', async () => {
    const t0 = (await frontend.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const details = { tool: 'search', query: 'open orders' };
    const context = { trace_id: 'abc123' };
    const res = await exchange(orchestrator, {
      subject_token: t0, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read',
      request_details: JSON.stringify(details), request_context: Buffer.from(JSON.stringify(context)).toString('base64url'),
    });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ issued_token_type: TXN, token_type: 'N_A' });
    const txnToken = res.body.access_token as string;
    const { payload, protectedHeader } = await jwtVerify(txnToken, createRemoteJWKSet(new URL(`${ts.url}/jwks`)), { issuer: ts.issuer, audience: TRUST_DOMAIN, typ: 'txntoken+jwt' });
    expect(protectedHeader.kid).toEqual(expect.any(String));
    expect(payload).toMatchObject({ sub: frontend.id, aud: TRUST_DOMAIN, scope: 'orders:read', req_wl: orchestrator.id, tctx: details });
    expect(payload.rctx).toMatchObject({ trace_id: 'abc123', authn: 'client_secret_basic' });
    expect((payload.rctx as { req_ip: string }).req_ip).toMatch(/127\.0\.0\.1/);
    expect(payload.txn).toEqual(expect.any(String));
    // TXN_TOKEN_TTL (300 s), never past the subject's expiry.
    expect(payload.exp).toBe(Math.min(payload.iat! + 300, decodeJwt(t0).exp!));
    expect(res.body.expires_in).toBe(payload.exp! - payload.iat!);
    expect(JSON.stringify(payload)).not.toContain(t0);

    const replaced = await exchange(tool, {
      subject_token: txnToken, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read',
      request_details: JSON.stringify({ ...details, page: 2 }),
    });
    expect(replaced.status, JSON.stringify(replaced.body)).toBe(200);
    const r = decodeJwt(replaced.body.access_token);
    expect(r).toMatchObject({ txn: payload.txn, sub: frontend.id, aud: TRUST_DOMAIN, scope: 'orders:read', req_wl: tool.id, tctx: { ...details, page: 2 } });
    // The call chain: the replacing workload, then the one that requested the replaced Txn-Token.
    expect(payload.act).toEqual({ sub: orchestrator.id });
    expect(r.act).toEqual({ sub: tool.id, act: { sub: orchestrator.id } });
    expect(r.exp).toBeLessThanOrEqual(payload.exp!);
    const listed = await ts.admin('GET', `/admin/tokens?txn=${payload.txn}`);
    expect(listed.body.tokens.map((t: { type: string }) => t.type)).toEqual(['txn_token', 'txn_token']);
  });

  it('binds an exchanged token with DPoP when the requester sends a proof', async () => {
    const t0 = (await frontend.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const config = await discover(ts.issuer, orchestrator.id, client.ClientSecretBasic(orchestrator.secret));
    const keys = await client.randomDPoPKeyPair('ES256');
    const res = await client.genericGrantRequest(config, TOKEN_EXCHANGE, { subject_token: t0, subject_token_type: AT }, { DPoP: client.getDPoPHandle(config, keys) });
    expect(res.token_type.toLowerCase()).toBe('dpop');
    expect((decodeJwt(res.access_token).cnf as { jkt: string }).jkt).toEqual(expect.any(String));
  });
});
