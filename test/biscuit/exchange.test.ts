import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, type JWK } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { client, discover, postForm } from '../support/oauth-client.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { BISCUIT_TOKEN_TYPE, biscuitRootKeys, delegate, verifyBiscuit, type BiscuitRequest } from '../../src/tokens/biscuit.js';
import { privateJwk, publicOf } from '../support/biscuit.js';

const TOOL = 'https://tools.example/mcp';
const PAY = 'https://pay.example/api';
const GRANTS = ['client_credentials', TOKEN_EXCHANGE];

describe('Biscuits through the token endpoint: minting, delegation, introspection, revocation', () => {
  let ts: TestServer;
  let frontend: SecretAgent;
  let orchestrator: SecretAgent;
  let specialist: SecretAgent;
  let tool: SecretAgent;
  let orchKey: JWK;
  let specKey: JWK;
  let jwks: { keys: JWK[] };

  beforeAll(async () => {
    ts = await startTestServer();
    orchKey = await privateJwk();
    specKey = await privateJwk('ES256');
    frontend = await registerSecretAgent(ts, { id: agentId('frontend'), scopes: ['search', 'read', 'pay'], audiences: [TOOL] });
    orchestrator = await registerSecretAgent(ts, {
      id: agentId('orchestrator'), grant_types: GRANTS, scopes: ['search', 'read', 'pay'], audiences: [TOOL, PAY], jwks: { keys: [{ ...publicOf(orchKey), alg: 'EdDSA' }] },
      token_exchange: { may_act_for_others: true, max_budget: 5000 },
    });
    specialist = await registerSecretAgent(ts, { id: agentId('specialist'), grant_types: GRANTS, scopes: ['search', 'read'], audiences: [TOOL], jwks: { keys: [{ ...publicOf(specKey), alg: 'ES256' }] } });
    tool = await registerSecretAgent(ts, { id: agentId('tool'), grant_types: GRANTS, scopes: ['read'], audiences: [TOOL] });
    jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: JWK[] };
  });
  afterAll(async () => {
    await ts?.close();
  });

  const verify = async (token: string, request: Partial<BiscuitRequest> = {}) => {
    const revoked = (await (await fetch(`${ts.url}/biscuit/revocations`)).json() as { revocation_ids: string[] }).revocation_ids;
    return verifyBiscuit(token, { rootKeys: biscuitRootKeys(jwks), revoked: new Set(revoked), request: { resource: TOOL, now: new Date(), ...request } });
  };
  const introspect = async (token: string) => (await postForm(`${ts.url}/token/introspection`, { token }, tool.auth)).body;
  const userToken = async () => (await frontend.token({ grant_type: 'client_credentials' })).body.access_token as string;
  const mint = (subject: string, extra: Record<string, string> = {}) =>
    exchange(orchestrator, { subject_token: subject, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 'search read', ...extra });

  it('publishes the root key, the token type and the revocation list', async () => {
    const meta = await (await fetch(`${ts.url}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>;
    expect(meta.token_exchange_requested_token_types_supported).toContain(BISCUIT_TOKEN_TYPE);
    expect(meta.token_exchange_subject_token_types_supported).toContain(BISCUIT_TOKEN_TYPE);
    expect(meta.biscuit_revocation_list_uri).toBe(`${ts.issuer}/biscuit/revocations`);
    expect(biscuitRootKeys(jwks).size).toBe(1);
    expect(jwks.keys.find((k) => k.kid?.startsWith('biscuit-'))).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA' });
    const list = await fetch(`${ts.url}/biscuit/revocations`);
    expect(list.headers.get('cache-control')).toBe('public, max-age=5');
  });

  it('mints a Biscuit with openid-client, verifiable offline, recorded with its revocation id', async () => {
    const t0 = await userToken();
    const config = await discover(ts.issuer, orchestrator.id, client.ClientSecretBasic(orchestrator.secret));
    const res = await client.genericGrantRequest(config, TOKEN_EXCHANGE, {
      subject_token: t0, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 'search read', audience: TOOL, budget: '3000',
    });
    expect(res).toMatchObject({ issued_token_type: BISCUIT_TOKEN_TYPE, token_type: 'n_a', scope: 'read search' });
    expect(res.expires_in).toBeLessThanOrEqual(decodeJwt(t0).exp! - Math.floor(Date.now() / 1000) + 1);
    const chain = await verify(res.access_token, { tools: ['search'], spend: 3000 });
    expect(chain.authority).toMatchObject({ issuer: ts.issuer, subject: frontend.id, holder: orchestrator.id, rights: ['read', 'search'], audiences: [TOOL], budget: 3000 });
    await expect(verify(res.access_token, { tools: ['pay'] })).rejects.toMatchObject({ failure: 'request' });
    await expect(verify(res.access_token, { spend: 3001 })).rejects.toMatchObject({ failure: 'request' });
    const records = await ts.admin('GET', `/admin/tokens?type=biscuit&jti=${chain.authority.tokenId}`);
    expect(records.body.tokens[0]).toMatchObject({ sub: frontend.id, client_id: orchestrator.id, parent_jti: decodeJwt(t0).jti, revocation_id: chain.revocationIds[0], scope: 'read search' });
    expect(await introspect(res.access_token)).toMatchObject({ active: true, sub: frontend.id, client_id: orchestrator.id, scope: 'read search', budget: 3000, delegation_depth: 0 });
  });

  it('refuses to mint beyond the subject, the registration or the budget', async () => {
    const t0 = await userToken();
    expect((await mint(t0, { scope: 'search admin' })).body.error).toBe('invalid_scope');
    expect((await mint(t0, { audience: 'https://elsewhere.example' })).body.error).toBe('invalid_target');
    expect((await mint(t0, { budget: '5001' })).body).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('max_budget') });
    expect((await mint(t0, { budget: '-1' })).body.error).toBe('invalid_request');
    expect((await mint(t0, { budget: '1.5' })).body.error).toBe('invalid_request');
    // A subject at its expiry (accepted within the clock tolerance) leaves no lifetime to give.
    const shift = decodeJwt(t0).exp! - Math.floor(Date.now() / 1000);
    ts.clock.advance(shift);
    try {
      expect((await mint(t0)).body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/expired/) });
    } finally {
      ts.clock.advance(-shift);
    }
    const asBiscuit = (await mint(t0)).body.access_token as string;
    // A Biscuit subject is only exchanged for another Biscuit.
    expect((await exchange(orchestrator, { subject_token: asBiscuit, subject_token_type: BISCUIT_TOKEN_TYPE })).body.error).toBe('invalid_request');
  });

  it('delegates offline and then through the token endpoint; the chain is recorded, introspected and revoked in cascade', async () => {
    const t0 = await userToken();
    const minted = (await mint(t0, { budget: '2000' })).body.access_token as string;
    // Offline: the orchestrator signs a delegation to the specialist with its own key.
    const offline = await delegate(minted, { delegate: specialist.id, delegateKey: publicOf(specKey), context: 'find the order', tools: ['search', 'read'], budget: 1000 }, orchKey, jwks);
    await expect(verify(offline, { tools: ['search'], spend: 1000 })).resolves.toMatchObject({ current: { holder: specialist.id } });

    // Through the token endpoint: the specialist hands on to the tool agent, named by its access token.
    const toolOwn = (await tool.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const form = { subject_token: offline, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE, actor_token: toolOwn, actor_token_type: AT };
    expect((await exchange(specialist, { ...form })).body).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('context') });
    expect((await exchange(specialist, { ...form, context: 'read it', scope: 'read pay' })).body.error).toBe('invalid_scope');
    expect((await exchange(specialist, { ...form, context: 'read it', budget: '1001' })).body.error).toBe('invalid_request');
    expect((await exchange(orchestrator, { ...form, context: 'read it' })).body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringContaining('current delegate') });
    const { actor_token: _a, actor_token_type: _t, ...noActor } = form;
    expect((await exchange(specialist, { ...noActor, context: 'read it' })).body.error).toBe('invalid_request');
    const res = await exchange(specialist, { ...form, context: 'read it', scope: 'read', budget: '500' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ issued_token_type: BISCUIT_TOKEN_TYPE, token_type: 'N_A', scope: 'read' });
    const last = res.body.access_token as string;
    const chain = await verify(last, { tools: ['read'], spend: 500 });
    expect(chain.hops.map((h) => [h.delegator, h.delegate, h.signedBy, h.context])).toEqual([
      [orchestrator.id, specialist.id, 'delegator', 'find the order'], [specialist.id, tool.id, 'issuer', 'read it'],
    ]);
    await expect(verify(last, { tools: ['search'] })).rejects.toMatchObject({ failure: 'request' });

    // Recorded with the minted token as its parent and the whole chain as actors.
    const mintJti = chain.authority.tokenId;
    const lineage = await ts.admin('GET', `/admin/tokens/${mintJti}/lineage`);
    expect(lineage.body.descendants).toHaveLength(1);
    expect(lineage.body.descendants[0]).toMatchObject({ type: 'biscuit', client_id: tool.id, actor: { sub: tool.id, act: { sub: specialist.id, act: { sub: orchestrator.id } } } });
    expect(await introspect(last)).toMatchObject({ active: true, client_id: tool.id, scope: 'read', budget: 500, delegation_depth: 2, act: { sub: specialist.id, act: { sub: orchestrator.id } } });

    // The specialist revokes the token it received: it and everything built on it stop working; the minted one does not.
    const outsider = await postForm(`${ts.url}/token/revocation`, { token: offline }, frontend.auth);
    expect(outsider.body.error).toBe('unauthorized_client');
    const revoked = await postForm(`${ts.url}/token/revocation`, { token: offline }, specialist.auth);
    expect(revoked.status).toBe(200);
    await expect(verify(offline)).rejects.toMatchObject({ failure: 'revoked', block: 1 });
    await expect(verify(last)).rejects.toMatchObject({ failure: 'revoked', block: 1 });
    expect(await introspect(last)).toEqual({ active: false });
    expect((await introspect(minted)).active).toBe(true);

    // Revoking the user's access token revokes the Biscuit minted from it, and so every delegation of it.
    await ts.admin('POST', `/admin/tokens/${decodeJwt(t0).jti}/revoke`);
    await expect(verify(minted)).rejects.toMatchObject({ failure: 'revoked', block: 0 });
    expect(await introspect(minted)).toEqual({ active: false });
  });

  it('revokes by revocation id through the admin API', async () => {
    const minted = (await mint(await userToken())).body.access_token as string;
    const offline = await delegate(minted, { delegate: specialist.id, context: 'x' }, orchKey, jwks);
    const [, hopId] = (await verify(offline)).revocationIds;
    expect((await ts.admin('POST', '/admin/biscuits/revocations', { revocation_id: 'nope' })).status).toBe(400);
    expect((await ts.admin('POST', '/admin/biscuits/revocations', { revocation_id: hopId, extra: 1 })).status).toBe(400);
    expect((await ts.admin('POST', '/admin/biscuits/revocations', { revocation_id: hopId })).status).toBe(200);
    await expect(verify(offline)).rejects.toMatchObject({ failure: 'revoked', block: 1 });
    await expect(verify(minted)).resolves.toBeDefined();
    expect((await fetch(`${ts.url}/admin/biscuits/revocations`, { method: 'POST' })).status).toBe(401);
  });

  it('introspects a chain as inactive once an agent in it is disabled', async () => {
    const minted = (await mint(await userToken())).body.access_token as string;
    const offline = await delegate(minted, { delegate: specialist.id, context: 'x' }, orchKey, jwks);
    expect((await introspect(offline)).active).toBe(true);
    expect((await ts.admin('DELETE', `/admin/agents/${encodeURIComponent(specialist.id)}`)).status).toBe(200);
    expect(await introspect(offline)).toEqual({ active: false });
    expect((await introspect(minted)).active).toBe(true);
  });
});

