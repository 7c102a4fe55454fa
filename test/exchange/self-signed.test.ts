import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, SignJWT, type CryptoKey } from 'jose';
import { agentId, enc, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { postForm } from '../support/oauth-client.js';
import { AT, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';
import { newAgentKey, witByJoinToken, workloadHeaders, type AgentKey } from '../support/workload.js';

/**
 * draft-ietf-oauth-transaction-tokens, self-signed subject tokens: a workload without an inbound token asks for
 * a Txn-Token with a JWT it signed itself, with the key it authenticates with (its WIT's, or its private_key_jwt
 * key). Everything the draft and this server require of it is checked over HTTP, each with a control.
 */

const SELF_SIGNED = 'urn:ietf:params:oauth:token-type:self_signed';
const API = 'https://api.self-signed.example';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
type Res = Awaited<ReturnType<typeof postForm>>;

describe('token exchange: self-signed subject tokens for Txn-Tokens', () => {
  let ts: TestServer;
  const W = agentId('self-wit');
  const P = agentId('self-pkjwt');
  let witKey: AgentKey;
  let pkKey: AgentKey;
  let otherKey: AgentKey;
  let wit: string;
  let secretAgent: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    witKey = await newAgentKey();
    pkKey = await newAgentKey('ES256');
    otherKey = await newAgentKey();
    const grants = ['client_credentials', TOKEN_EXCHANGE];
    expect((await ts.admin('POST', '/admin/agents', { id: W, token_endpoint_auth_method: 'wit', scopes: ['read', 'write'], audiences: [API], attestors: [{ type: 'join_token' }], grant_types: grants })).status).toBe(201);
    expect((await ts.admin('POST', '/admin/agents', { id: P, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ ...pkKey.jwk, kid: 'p-1' }] }, scopes: ['read'], audiences: [API], grant_types: grants })).status).toBe(201);
    secretAgent = await registerSecretAgent(ts, { id: agentId('self-secret'), scopes: ['read'], audiences: [API], grant_types: grants });
    wit = await witByJoinToken(ts, W, witKey);
  });
  afterAll(async () => {
    await ts?.close();
  });

  const now = () => ts.clock.now();
  const selfSigned = (key: CryptoKey, claims: Record<string, unknown>, header: Record<string, unknown> = {}, alg = 'EdDSA') =>
    new SignJWT(claims).setProtectedHeader({ alg, ...header } as { alg: string }).sign(key);
  const claimsFor = (id: string, over: Record<string, unknown> = {}) => ({ iss: id, sub: id, aud: ts.issuer, iat: now(), exp: now() + 60, jti: randomUUID(), ...over });
  const txnForm = (subject: string, over: Record<string, string> = {}) => ({
    grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: SELF_SIGNED, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'read', ...over,
  });
  /** A Txn-Token request authenticated with the WIT and a fresh WPT. */
  const asWit = async (form: Record<string, string>) => postForm(`${ts.url}/token`, { client_id: W, ...form }, await workloadHeaders(ts, wit, witKey, '/token'));
  /** A Txn-Token request authenticated with private_key_jwt. */
  const asPk = async (form: Record<string, string>) => {
    const assertion = await selfSigned(pkKey.privateKey, { iss: P, sub: P, aud: `${ts.issuer}/token`, jti: randomUUID(), exp: now() + 60 }, { kid: 'p-1' }, 'ES256');
    return postForm(`${ts.url}/token`, { client_id: P, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion, ...form });
  };
  const refused = (res: Res, error: string, why: RegExp) => {
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error, JSON.stringify(res.body)).toBe(error);
    expect(res.body.error_description).toMatch(why);
    expect(res.body.access_token).toBeUndefined();
    expect(res.headers.get('cache-control')).toContain('no-store');
  };

  it('issues a Txn-Token for the workload itself, bounded by its registration and the JWT\'s exp, and advertises the type', async () => {
    const meta = await (await fetch(`${ts.url}/.well-known/oauth-authorization-server`)).json() as Record<string, string[]>;
    expect(meta.token_exchange_subject_token_types_supported).toContain(SELF_SIGNED);
    const claims = claimsFor(W, { exp: now() + 30 });
    const res = await asWit(txnForm(await selfSigned(witKey.privateKey, claims, { typ: 'JWT' }), { request_details: '{"job":"nightly-reindex"}' }));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ issued_token_type: TXN, token_type: 'N_A', scope: 'read' });
    const t = decodeJwt(res.body.access_token);
    expect(t).toMatchObject({ sub: W, req_wl: W, aud: TRUST_DOMAIN, scope: 'read', tctx: { job: 'nightly-reindex' } });
    expect(t.act).toBeUndefined();
    expect(t.exp).toBeLessThanOrEqual(claims.exp);
    const record = await ts.admin('GET', `/admin/tokens/${enc(t.jti!)}/lineage`);
    expect(record.body.token).toMatchObject({ type: 'txn_token', sub: W, client_id: W, parent_jti: null });
    // With the private_key_jwt key too.
    const pk = await asPk(txnForm(await selfSigned(pkKey.privateKey, claimsFor(P), { kid: 'p-1' }, 'ES256')));
    expect(pk.status, JSON.stringify(pk.body)).toBe(200);
    expect(decodeJwt(pk.body.access_token)).toMatchObject({ sub: P, req_wl: P, scope: 'read' });
    // Scope: what the workload is registered for, or what the JWT's own scope narrows it to.
    refused(await asWit(txnForm(await selfSigned(witKey.privateKey, claimsFor(W)), { scope: 'admin' })), 'invalid_scope', /admin/);
    refused(await asWit(txnForm(await selfSigned(witKey.privateKey, claimsFor(W, { scope: 'read' })), { scope: 'write' })), 'invalid_scope', /not held by the subject token: write/);
    const { scope: _s, ...noScope } = txnForm(await selfSigned(witKey.privateKey, claimsFor(W)));
    refused(await asWit(noScope), 'invalid_request', /missing required parameter scope/);
  });

  it('refuses it once used, for as long as it could still be accepted (its exp plus the clock tolerance) → invalid_grant', async () => {
    const claims = claimsFor(W, { exp: now() + 20 });
    const token = await selfSigned(witKey.privateKey, claims);
    expect((await asWit(txnForm(token))).status).toBe(200);
    refused(await asWit(txnForm(token)), 'invalid_grant', /already used/);
    const id = createHash('sha256').update(`self-signed ${W}`).update('\n').update(claims.jti).digest('base64url');
    const entry = await ts.server.db.knex('replay_cache').where({ id }).first();
    expect(Number(entry.expires_at)).toBeGreaterThanOrEqual(claims.exp + 5);
    // Past its exp but inside the 5-second tolerance it would still verify: the replay entry still refuses it.
    const shift = claims.exp - now() + 3;
    ts.clock.advance(shift);
    try {
      refused(await asWit(txnForm(token)), 'invalid_grant', /already used/);
    } finally {
      ts.clock.advance(-shift);
    }
  });

  it('refuses what the draft or this server rules out → invalid_grant (or invalid_request), recorded', async () => {
    const w = (claims: Record<string, unknown>, header: Record<string, unknown> = {}, key = witKey.privateKey) => selfSigned(key, claims, header);
    const cases: [string, Promise<string>, RegExp][] = [
      ['signed by a key not the workload\'s', w(claimsFor(W), {}, otherKey.privateKey), /signature is not valid/],
      ['iss another workload', w(claimsFor(W, { iss: P })), /iss claim/],
      ['sub another subject', w(claimsFor(W, { sub: agentId('someone-else') })), /sub claim/],
      ['aud the token endpoint', w(claimsFor(W, { aud: `${ts.issuer}/token` })), /aud claim/],
      ['aud another server', w(claimsFor(W, { aud: 'https://other.example' })), /aud claim/],
      ['no aud', w(claimsFor(W, { aud: undefined })), /aud claim/],
      ['expired', w(claimsFor(W, { iat: now() - 120, exp: now() - 60 })), /expired/],
      ['too long-lived', w(claimsFor(W, { exp: now() + 3600 })), /at most 300 seconds/],
      ['issued in the future', w(claimsFor(W, { iat: now() + 120, exp: now() + 180 })), /future|iat claim/],
      ['no exp', w(claimsFor(W, { exp: undefined })), /exp claim/],
      ['no iat', w(claimsFor(W, { iat: undefined })), /iat claim/],
      ['no jti', w(claimsFor(W, { jti: undefined })), /jti claim/],
      ['an access token typ', w(claimsFor(W), { typ: 'at+jwt' }), /not a self-signed subject token/],
      ['a Txn-Token typ', w(claimsFor(W), { typ: 'txntoken+jwt' }), /not a self-signed subject token/],
      ['HMAC', new SignJWT(claimsFor(W)).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('a shared secret of thirty-two bytes!')), /asymmetric/],
      ['unsigned', Promise.resolve(`${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(claimsFor(W))).toString('base64url')}.`), /asymmetric/],
      ['not a JWT', Promise.resolve('not-a-jwt'), /malformed/],
    ];
    for (const [what, token, why] of cases) {
      const res = await asWit(txnForm(await token));
      expect(res.status, `${what}: ${JSON.stringify(res.body)}`).toBe(400);
      refused(res, 'invalid_grant', why);
    }
    // Only for a Txn-Token.
    for (const requested of [AT, 'urn:ietf:params:oauth:token-type:jwt', 'urn:agent-sts:params:oauth:token-type:biscuit']) {
      refused(await asWit(txnForm(await w(claimsFor(W)), { requested_token_type: requested, resource: API })), 'invalid_request', /only for a Txn-Token/);
    }
    // A secret-authenticated agent has no key to sign with.
    const secret = await secretAgent.token(txnForm(await w(claimsFor(secretAgent.id))));
    refused(secret, 'invalid_grant', /must be signed with the key this agent authenticates with/);
    // The private_key_jwt agent: its own key, not the WIT agent's.
    refused(await asPk(txnForm(await selfSigned(witKey.privateKey, claimsFor(P), { kid: 'p-1' }))), 'invalid_grant', /not signed by a key registered|signature|alg/);
    // Recorded with the reason.
    const ev = await ts.admin('GET', `/admin/events?decision=refused&client_id=${enc(W)}&limit=5`);
    expect(ev.body.events[0]).toMatchObject({ decision: 'refused', action: `token:${TOKEN_EXCHANGE}`, reason: 'invalid_request' });
    // Control: the same requests, well formed.
    expect((await asWit(txnForm(await w(claimsFor(W))))).status).toBe(200);
  });
});
