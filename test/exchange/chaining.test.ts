import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { client, discover } from '../support/oauth-client.js';
import { TestIssuer } from '../support/workload.js';
import { AT, exchange, JWT, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';

const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const SPEC_API = 'https://specialist.example/api';
const TOOL = 'https://tools.example/mcp';

describe('exchanging a user\'s token from a trusted identity provider through three hops', () => {
  let ts: TestServer;
  let idp: TestIssuer;
  let orchestrator: SecretAgent;
  let specialist: SecretAgent;
  let picky: SecretAgent;

  beforeAll(async () => {
    idp = await new TestIssuer().start();
    ts = await startTestServer({ TRUSTED_ISSUERS: idp.trustedIssuersEnv() });
    const policy = { may_act_for_others: true, subject_token_types: [ID_TOKEN, AT], subject_issuers: [idp.url] };
    orchestrator = await registerSecretAgent(ts, { id: agentId('orchestrator'), grant_types: [TOKEN_EXCHANGE], scopes: ['orders:read', 'tools:search'], audiences: [SPEC_API], token_exchange: policy });
    specialist = await registerSecretAgent(ts, { id: agentId('specialist'), grant_types: [TOKEN_EXCHANGE], scopes: ['tools:search'], audiences: [TOOL], token_exchange: { may_act_for_others: true } });
    picky = await registerSecretAgent(ts, { id: agentId('picky'), grant_types: [TOKEN_EXCHANGE], audiences: [SPEC_API], token_exchange: { may_act_for_others: true, subject_token_types: [ID_TOKEN] } });
  });
  afterAll(async () => {
    await ts?.close();
    await idp?.close();
  });

  it('user ID token → orchestrator → specialist: sub stays the user, act names every agent in order', async () => {
    const idToken = await idp.sign({ sub: 'user:alice', nonce: 'n' });
    const config = await discover(ts.issuer, orchestrator.id, client.ClientSecretBasic(orchestrator.secret));
    const hop1 = await client.genericGrantRequest(config, TOKEN_EXCHANGE, { subject_token: idToken, subject_token_type: ID_TOKEN, scope: 'tools:search' });
    const jwks = createRemoteJWKSet(new URL(`${ts.url}/jwks`));
    const { payload: p1 } = await jwtVerify(hop1.access_token, jwks, { issuer: ts.issuer, audience: SPEC_API, typ: 'at+jwt' });
    expect(p1).toMatchObject({ sub: 'user:alice', client_id: orchestrator.id, scope: 'tools:search', act: { sub: orchestrator.id } });
    expect(p1.exp).toBeLessThanOrEqual(decodeJwt(idToken).exp!);

    const hop2 = await exchange(specialist, { subject_token: hop1.access_token, subject_token_type: AT });
    expect(hop2.status, JSON.stringify(hop2.body)).toBe(200);
    const { payload: p2 } = await jwtVerify(hop2.body.access_token, jwks, { issuer: ts.issuer, audience: TOOL, typ: 'at+jwt' });
    expect(p2).toMatchObject({ sub: 'user:alice', client_id: specialist.id, scope: 'tools:search', act: { sub: specialist.id, act: { sub: orchestrator.id } } });
    const lineage = await ts.admin('GET', `/admin/tokens/${p2.jti}/lineage`);
    expect(lineage.body.ancestors.map((t: { jti: string }) => t.jti)).toEqual([p1.jti]);
  });

  it('honours may_act in the subject token', async () => {
    const allowed = await exchange(orchestrator, { subject_token: await idp.sign({ sub: 'user:bob', may_act: { sub: orchestrator.id } }), subject_token_type: ID_TOKEN });
    expect(allowed.status, JSON.stringify(allowed.body)).toBe(200);
    const refused = await exchange(orchestrator, { subject_token: await idp.sign({ sub: 'user:bob', may_act: { sub: specialist.id } }), subject_token_type: ID_TOKEN });
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/may_act/) });
  });

  it('refuses tokens of untrusted issuers, of issuers the agent may not use, and scopes the user token would widen', async () => {
    const stranger = await new TestIssuer().start();
    try {
      const res = await exchange(orchestrator, { subject_token: await stranger.sign({ sub: 'user:eve' }), subject_token_type: ID_TOKEN });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/not trusted/) });
    } finally {
      await stranger.close();
    }
    const notListed = await exchange(picky, { subject_token: await idp.sign({ sub: 'user:carol' }), subject_token_type: ID_TOKEN });
    expect(notListed.status).toBe(400);
    expect(notListed.body.error).toBe('unauthorized_client');
    const widening = await exchange(orchestrator, { subject_token: await idp.sign({ sub: 'user:dan', scope: 'orders:read' }), subject_token_type: ID_TOKEN, scope: 'tools:search' });
    expect(widening.status).toBe(400);
    expect(widening.body.error).toBe('invalid_scope');
    const wrongAud = await exchange(orchestrator, { subject_token: await idp.sign({ sub: 'user:dan', aud: 'someone-else' }), subject_token_type: ID_TOKEN });
    expect(wrongAud.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/aud/) });
  });
});

describe('identity chaining between two trust domains', () => {
  let a: TestServer;
  let b: TestServer;
  let agentA: SecretAgent;
  let agentB: SecretAgent;
  let partner: TestIssuer;

  beforeAll(async () => {
    partner = await new TestIssuer().start();
    a = await startTestServer();
    b = await startTestServer({ PARTNER_DOMAINS: JSON.stringify([
      { issuer: a.issuer, jwks_uri: `${a.issuer}/jwks`, subject_prefixes: [{ from: 'spiffe://agent-sts.test/', to: 'spiffe://agent-sts.test/partners/a/' }] },
      { issuer: partner.url, jwks_uri: `${partner.url}/jwks`, subject_map: { 'user:alice': 'spiffe://agent-sts.test/users/alice' } },
    ]) });
    await a.restart({ PARTNER_DOMAINS: JSON.stringify([{ issuer: b.issuer, jwks_uri: `${b.issuer}/jwks` }]) });
    agentA = await registerSecretAgent(a, { id: agentId('caller'), grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['read', 'write'], audiences: ['https://api.a.example', b.issuer] });
    agentB = await registerSecretAgent(b, { id: agentId('resource-side'), grant_types: [JWT_BEARER], scopes: ['read'], audiences: ['https://api.b.example'] });
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
    await partner?.close();
  });

  it('A issues a short-lived JWT authorization grant for B; B redeems it once for a token of the mapped local subject', async () => {
    const own = (await agentA.token({ grant_type: 'client_credentials', scope: 'read write' })).body.access_token as string;
    const grant = await exchange(agentA, { subject_token: own, subject_token_type: AT, requested_token_type: JWT, audience: b.issuer, scope: 'read' });
    expect(grant.status, JSON.stringify(grant.body)).toBe(200);
    expect(grant.body).toMatchObject({ issued_token_type: JWT, token_type: 'N_A' });
    expect(grant.body.expires_in).toBeLessThanOrEqual(60);
    const jwtGrant = grant.body.access_token as string;
    const { payload } = await jwtVerify(jwtGrant, createRemoteJWKSet(new URL(`${a.issuer}/jwks`)), { issuer: a.issuer, audience: b.issuer });
    expect(decodeProtectedHeader(jwtGrant).typ).toBe('JWT');
    expect(payload).toMatchObject({ sub: agentA.id, scope: 'read' });
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(60);

    const config = await discover(b.issuer, agentB.id, client.ClientSecretBasic(agentB.secret));
    const tokens = await client.genericGrantRequest(config, JWT_BEARER, { assertion: jwtGrant });
    const { payload: pb } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL(`${b.issuer}/jwks`)), { issuer: b.issuer, audience: 'https://api.b.example', typ: 'at+jwt' });
    expect(pb).toMatchObject({ sub: 'spiffe://agent-sts.test/partners/a/agents/caller', client_id: agentB.id, scope: 'read' });

    const replay = await agentB.token({ grant_type: JWT_BEARER, assertion: jwtGrant });
    expect(replay.status).toBe(400);
    expect(replay.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/already used/) });
  });

  it('refuses a grant for a non-partner audience, from an unknown domain, for another audience, replayed, or for an unknown subject', async () => {
    const own = (await agentA.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const notPartner = await exchange(agentA, { subject_token: own, subject_token_type: AT, requested_token_type: JWT, audience: 'https://api.a.example' });
    expect(notPartner.status).toBe(400);
    expect(notPartner.body.error).toBe('invalid_target');

    const redeem = (assertion: string) => agentB.token({ grant_type: JWT_BEARER, assertion });
    const jti = () => `jti-${Math.random().toString(36).slice(2)}-0123456789`;
    const unknownDomain = await new TestIssuer().start();
    try {
      const res = await redeem(await unknownDomain.sign({ sub: 'user:alice', aud: b.issuer, jti: jti() }));
      expect(res.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/partner domain/) });
    } finally {
      await unknownDomain.close();
    }
    const good = await redeem(await partner.sign({ sub: 'user:alice', aud: b.issuer, jti: jti() }));
    expect(good.status, JSON.stringify(good.body)).toBe(200);
    expect(decodeJwt(good.body.access_token).sub).toBe('spiffe://agent-sts.test/users/alice');
    const elsewhere = await redeem(await partner.sign({ sub: 'user:alice', aud: 'https://as.elsewhere.example', jti: jti() }));
    expect(elsewhere.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/aud/) });
    const unknownSubject = await redeem(await partner.sign({ sub: 'user:mallory', aud: b.issuer, jti: jti() }));
    expect(unknownSubject.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/not known here/) });
    const noJti = await redeem(await partner.sign({ sub: 'user:alice', aud: b.issuer }));
    expect(noJti.body.error).toBe('invalid_grant');
    // Sender constraint as for client credentials: a DPoP-bound agent needs a proof, and the token is bound to its key.
    const bound = await registerSecretAgent(b, { id: agentId('bound'), grant_types: [JWT_BEARER], audiences: ['https://api.b.example'], dpop_bound_access_tokens: true });
    const noProof = await bound.token({ grant_type: JWT_BEARER, assertion: await partner.sign({ sub: 'user:alice', aud: b.issuer, jti: jti() }) });
    expect(noProof.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/DPoP/) });
    const boundConfig = await discover(b.issuer, bound.id, client.ClientSecretBasic(bound.secret));
    const dpopKeys = await client.randomDPoPKeyPair('ES256');
    const withProof = await client.genericGrantRequest(boundConfig, JWT_BEARER, { assertion: await partner.sign({ sub: 'user:alice', aud: b.issuer, jti: jti() }) }, { DPoP: client.getDPoPHandle(boundConfig, dpopKeys) });
    expect(withProof.token_type.toLowerCase()).toBe('dpop');
    expect((decodeJwt(withProof.access_token).cnf as { jkt: string }).jkt).toEqual(expect.any(String));

    const events = await b.admin('GET', `/admin/events?decision=refused&client_id=${encodeURIComponent(agentB.id)}`);
    expect(events.body.events.filter((e: { action: string }) => e.action === `token:${JWT_BEARER}`).length).toBeGreaterThanOrEqual(4);
  });
});
