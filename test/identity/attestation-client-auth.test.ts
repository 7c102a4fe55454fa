import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, decodeJwt, SignJWT } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { client, discover, postForm } from '../support/oauth-client.js';
import { newAgentKey, tokenWithWit, witByJoinToken, workloadHeaders, type AgentKey } from '../support/workload.js';
import { createClientAttestationPop } from '../../src/tokens/client-attestation-pop.js';

const API = 'https://api.example.com';
/** The IANA "OAuth Token Endpoint Authentication Methods" registry, with the attestation draft's entry. */
const REGISTERED_METHODS = [
  'none', 'client_secret_post', 'client_secret_basic', 'client_secret_jwt', 'private_key_jwt', 'tls_client_auth', 'self_signed_tls_client_auth',
  'attest_jwt_client_auth',
];

/**
 * WIT client authentication through the registered method attest_jwt_client_auth (draft-ietf-oauth-attestation-based-client-auth,
 * as draft-ietf-oauth-spiffe-client-auth profiles it for WITs): the WIT in OAuth-Client-Attestation, a Client Attestation
 * PoP JWT signed by its key in OAuth-Client-Attestation-PoP.
 */
describe('WIT client authentication as attest_jwt_client_auth', () => {
  let ts: TestServer;
  let key: AgentKey;
  let wit: string;
  const ID = agentId('attesting');

  const pop = (extra: { key?: AgentKey; issuer?: string; clientId?: string; now?: number; jti?: string } = {}) =>
    createClientAttestationPop({ key: (extra.key ?? key).privateKey, alg: (extra.key ?? key).alg, issuer: extra.issuer ?? ts.issuer, ...extra.clientId ? { clientId: extra.clientId } : {}, ...extra.now ? { now: extra.now } : {}, ...extra.jti ? { jti: extra.jti } : {} });
  const attested = async (popJwt?: string, w = wit) => ({ 'oauth-client-attestation': w, 'oauth-client-attestation-pop': popJwt ?? await pop() });
  const token = (headers: Record<string, string>, form: Record<string, string> = { client_id: ID }) => postForm(`${ts.url}/token`, { grant_type: 'client_credentials', ...form }, headers);

  async function refused(res: { status: number; body: any; headers: Headers }, pattern: RegExp) {
    expect(res.status, JSON.stringify(res.body)).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect(res.body.error_description).toMatch(pattern);
    expect(res.headers.get('cache-control')).toMatch(/no-store/);
  }

  beforeAll(async () => {
    ts = await startTestServer();
    const reg = await ts.admin('POST', '/admin/agents', { id: ID, token_endpoint_auth_method: 'wit', scopes: ['tools:call'], audiences: [API], attestors: [{ type: 'join_token' }] });
    expect(reg.status, JSON.stringify(reg.body)).toBe(201);
    key = await newAgentKey('ES256');
    wit = await witByJoinToken(ts, ID, key);
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('publishes only registered client authentication method names, and the attestation algorithms', async () => {
    const meta = await (await fetch(`${ts.url}/.well-known/oauth-authorization-server`)).json() as Record<string, string[]>;
    expect(meta.token_endpoint_auth_methods_supported).toContain('attest_jwt_client_auth');
    for (const field of Object.keys(meta).filter((f) => f.endsWith('_auth_methods_supported'))) {
      for (const method of meta[field]!) expect(REGISTERED_METHODS, `${field}: ${method}`).toContain(method);
    }
    expect(meta.client_attestation_signing_alg_values_supported).toEqual(['EdDSA', 'ES256']);
    expect(meta.client_attestation_pop_signing_alg_values_supported).toEqual(['EdDSA', 'ES256']);
  });

  it('issues a token bound to the WIT key to an openid-client client sending the WIT and a Client Attestation PoP JWT', async () => {
    // openid-client finds the token endpoint by discovery; the client authentication adds the two headers.
    const attest: client.ClientAuth = async (_as, c, body, headers) => {
      body.set('client_id', c.client_id);
      headers.set('oauth-client-attestation', wit);
      headers.set('oauth-client-attestation-pop', await pop());
    };
    const config = await discover(ts.issuer, ID, attest);
    expect(config.serverMetadata().token_endpoint_auth_methods_supported).toContain('attest_jwt_client_auth');
    const tokens = await client.clientCredentialsGrant(config, { resource: API });
    expect(tokens.token_type).toBe('dpop');
    const claims = decodeJwt(tokens.access_token);
    expect(claims).toMatchObject({ sub: ID, client_id: ID, aud: API, scope: 'tools:call', cnf: { jkt: await calculateJwkThumbprint(key.jwk) } });
    // The token descends from the WIT, as with the WIMSE headers.
    const record = await ts.admin('GET', `/admin/tokens/${claims.jti}`);
    expect(record.body.parent_jti).toBe(decodeJwt(wit).jti);

    // The same WIT authenticates at introspection with a fresh PoP; the token is active.
    const intro = await postForm(`${ts.url}/token/introspection`, { token: tokens.access_token, client_id: ID }, await attested());
    expect(intro.status, JSON.stringify(intro.body)).toBe(200);
    expect(intro.body).toMatchObject({ active: true, sub: ID });
  });

  it('accepts a PoP with iss the client id (earlier drafts), and keeps the WIMSE headers working', async () => {
    expect((await token(await attested(await pop({ clientId: ID })))).status).toBe(200);
    const wimse = await tokenWithWit(ts, ID, wit, key);
    expect(wimse.status, JSON.stringify(wimse.body)).toBe(200);
  });

  it('answers 401 invalid_client to a request authenticated by a WIT that names no client_id, in either form', async () => {
    for (const headers of [await attested(), await workloadHeaders(ts, wit, key, '/token')]) {
      const res = await token(headers, {});
      await refused(res, /client_id is required/);
    }
    // A client_id other than the WIT's subject finds no client.
    const other = await token(await attested(), { client_id: agentId('someone-else') });
    expect(other.status).toBe(401);
    expect(other.body.error).toBe('invalid_client');
  });

  it('refuses a PoP replayed, for another audience, signed by another key, of another typ or alg, too old, or of another iss', async () => {
    const once = await pop();
    expect((await token(await attested(once))).status).toBe(200);
    await refused(await token(await attested(once)), /already used/);
    await refused(await token(await attested(await pop({ issuer: `${ts.issuer}/token` }))), /aud/);
    const stranger = await newAgentKey('ES256');
    await refused(await token(await attested(await pop({ key: stranger }))), /signature/);
    const ed = await newAgentKey('EdDSA');
    await refused(await token(await attested(await pop({ key: ed }))), /alg/);
    const now = Math.floor(Date.now() / 1000);
    await refused(await token(await attested(await pop({ now: now - 600 }))), /iat|expired/);
    await refused(await token(await attested(await pop({ now: now + 600 }))), /iat|future/);
    await refused(await token(await attested(await pop({ clientId: agentId('someone-else') }))), /iss/);
    const dpopTyped = await new SignJWT({ aud: ts.issuer, jti: 'x'.repeat(24) }).setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256' }).setIssuedAt().sign(key.privateKey);
    await refused(await token(await attested(dpopTyped)), /typ/);
    const noJti = await new SignJWT({ aud: ts.issuer }).setProtectedHeader({ typ: 'oauth-client-attestation-pop+jwt', alg: 'ES256' }).setIssuedAt().sign(key.privateKey);
    await refused(await token(await attested(noJti)), /jti/);
    // Malformed input is a clear invalid_client, never a 500.
    const raw = (header: object, claims: object) => `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.AAAA`;
    for (const bad of ['x', 'a.b.c', raw({ alg: 'none', typ: 'oauth-client-attestation-pop+jwt' }, { aud: ts.issuer, jti: 'j', iat: now }), raw({ alg: 'ES256' }, { aud: 7, jti: {}, iat: 'now' }), '.'.repeat(3000)]) {
      await refused(await token(await attested(bad)), /./);
      await refused(await token(await attested(await pop(), bad)), /./);
    }
    const numeric = await new SignJWT({ aud: ts.issuer, jti: 12345 as unknown as string }).setProtectedHeader({ typ: 'oauth-client-attestation-pop+jwt', alg: 'ES256' }).setIssuedAt().sign(key.privateKey);
    await refused(await token(await attested(numeric)), /jti/);
  });

  it('refuses half the headers, both forms at once, an attestation that is not our WIT, and a WIT of an agent not authenticating with one', async () => {
    await refused(await token({ 'oauth-client-attestation': wit }), /both/);
    await refused(await token({ 'oauth-client-attestation-pop': await pop() }), /both/);
    await refused(await token({ ...await attested(), ...await workloadHeaders(ts, wit, key, '/token') }), /one mechanism/);
    const selfMade = await new SignJWT({ iss: ts.issuer, sub: ID, cnf: { jwk: key.jwk } }).setProtectedHeader({ typ: 'oauth-client-attestation+jwt', alg: 'ES256' }).setIssuedAt().setExpirationTime('1h').sign(key.privateKey);
    await refused(await token(await attested(undefined, selfMade)), /typ|kid|signed|WIT/);

    const secretAgent = agentId('secret-attesting');
    expect((await ts.admin('POST', '/admin/agents', { id: secretAgent, audiences: [API], attestors: [{ type: 'join_token' }] })).status).toBe(201);
    const k = await newAgentKey('ES256');
    const itsWit = await witByJoinToken(ts, secretAgent, k);
    await refused(await token(await attested(await pop({ key: k }), itsWit), { client_id: secretAgent }), /does not authenticate with a WIT/);
    const events = await ts.admin('GET', `/admin/events?decision=refused&client_id=${encodeURIComponent(secretAgent)}`);
    expect(events.body.events.map((e: { detail: string }) => e.detail)).toContain('this agent does not authenticate with a WIT');
  });
});
