import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { agentKeyPair, postForm } from '../support/oauth-client.js';
import { registerSecretAgent, type SecretAgent } from '../support/agents.js';
import { newAgentKey, postJson, TestIssuer, witByJoinToken, type AgentKey } from '../support/workload.js';
import { createWpt } from '../../src/tokens/wpt.js';

const API = 'https://api.example.com';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

/**
 * A one-time credential stays refused for as long as it can be accepted: its expiry plus the clock
 * tolerance, on the clock its verification uses. The server's clock is moved past the credential's
 * `exp` (and past the replay store's sweep interval) while the credential is still inside the tolerance.
 * The server's clock starts behind the system's, so the replay store sweeps by it (it sweeps an entry only
 * once both clocks have passed it).
 */
describe('one-time credentials are refused again until they can no longer be accepted', () => {
  let ts: TestServer;
  let partner: TestIssuer;
  const WIT_AGENT = agentId('replay-wit');
  let key: AgentKey;
  let wit: string;
  let chaining: SecretAgent;

  beforeAll(async () => {
    partner = await new TestIssuer().start();
    ts = await startTestServer({
      PARTNER_DOMAINS: JSON.stringify([{ issuer: partner.url, jwks_uri: `${partner.url}/jwks`, subject_map: { 'user:alice': 'spiffe://agent-sts.test/users/alice' } }]),
    });
    ts.clock.advance(-1000);
    const res = await ts.admin('POST', '/admin/agents', { id: WIT_AGENT, token_endpoint_auth_method: 'wit', audiences: [API], attestors: [{ type: 'join_token' }, { type: 'wit' }] });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    key = await newAgentKey();
    wit = await witByJoinToken(ts, WIT_AGENT, key);
    chaining = await registerSecretAgent(ts, { id: agentId('replay-chaining'), grant_types: [JWT_BEARER], audiences: [API] });
  });
  afterAll(async () => {
    await ts?.close();
    await partner?.close();
  });

  /** A WPT for `path` expiring 62 s from the server's now. */
  const wptFor = (path: string) => createWpt({ wit, key: key.privateKey, alg: key.alg, audience: `${ts.issuer}${path}`, now: ts.clock.now(), lifetime: 62 });
  const withWit = (proof: string) => ({ 'workload-identity-token': wit, 'workload-proof-token': proof });

  it('a WPT at the token endpoint, replayed 2 s after its exp (inside the clock tolerance)', async () => {
    const headers = withWit(await wptFor('/token'));
    const request = () => postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: WIT_AGENT }, headers);
    expect((await request()).status).toBe(200);
    expect((await request()).body.error_description).toMatch(/already used/);
    ts.clock.advance(64);
    const late = await request();
    expect(late.status, JSON.stringify(late.body)).toBe(401);
    expect(late.body).toMatchObject({ error: 'invalid_client', error_description: expect.stringMatching(/already used/) });
  });

  it('a WPT renewing a WIT, replayed 2 s after its exp', async () => {
    const renewal = await newAgentKey();
    const headers = withWit(await wptFor('/wit'));
    const renew = () => postJson(`${ts.url}/wit`, { agent_id: WIT_AGENT, jwk: renewal.jwk, attestation: { type: 'wit' } }, headers);
    expect((await renew()).status).toBe(200);
    ts.clock.advance(64);
    const late = await renew();
    expect(late.status, JSON.stringify(late.body)).toBe(400);
    expect(late.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/already used/) });
  });

  it('a jwt-bearer assertion, replayed 2 s after its exp', async () => {
    const assertion = await partner.sign({ sub: 'user:alice', aud: ts.issuer, jti: randomUUID(), exp: ts.clock.now() + 62 });
    const redeem = () => chaining.token({ grant_type: JWT_BEARER, assertion });
    const first = await redeem();
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect((await redeem()).body.error_description).toMatch(/already used/);
    ts.clock.advance(64);
    const late = await redeem();
    expect(late.status, JSON.stringify(late.body)).toBe(400);
    expect(late.body).toMatchObject({ error: 'invalid_grant', error_description: expect.stringMatching(/already used/) });
  });

  it('a DPoP proof at the token endpoint dated ahead stays claimed until iat + 300 s, the end of the provider\'s window', async () => {
    // oidc-provider accepts a proof while |now - iat| <= 300 s (its own clock, the system's): one dated
    // 250 s ahead is good for 550 s, not the 300 s from its first use.
    const agent = await registerSecretAgent(ts, { id: agentId('replay-dpop'), audiences: [API] });
    const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
    const jti = randomUUID();
    const iat = Math.floor(Date.now() / 1000) + 250;
    const proof = await new SignJWT({ htm: 'POST', htu: `${ts.issuer}/token`, jti, iat })
      .setProtectedHeader({ alg: 'EdDSA', typ: 'dpop+jwt', jwk: await exportJWK(publicKey) })
      .sign(privateKey);
    const request = () => agent.token({ grant_type: 'client_credentials' }, { dpop: proof });
    const first = await request();
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.token_type).toBe('DPoP');
    const replay = await request();
    expect(replay.status).toBe(400);
    expect(replay.body.error_description).toMatch(/Replay/i);
    const id = createHash('sha256').update(agent.id).update('\n').update(jti).digest('base64url');
    const row = await ts.server.db.knex('replay_cache').where({ id }).first();
    expect(Number(row.expires_at)).toBeGreaterThanOrEqual(iat + 300);
  });

  it('a private_key_jwt client assertion, replayed after its exp inside the clock tolerance', async () => {
    const id = agentId('replay-pkjwt');
    const keys = await agentKeyPair();
    expect((await ts.admin('POST', '/admin/agents', { id, audiences: [API], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.jwk] } })).status).toBe(201);
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({ iss: id, sub: id, aud: ts.issuer, jti: randomUUID(), iat: now, exp: now + 1 })
      .setProtectedHeader({ alg: 'EdDSA', kid: keys.jwk.kid! })
      .sign(keys.privateKey);
    const request = () => postForm(`${ts.url}/token`, {
      grant_type: 'client_credentials', client_id: id, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion,
    });
    const first = await request();
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await new Promise((r) => setTimeout(r, 2500));
    // Past the sweep interval: the entry is kept while the system clock is inside exp + tolerance.
    ts.clock.advance(64);
    const late = await request();
    expect(late.status, JSON.stringify(late.body)).toBe(401);
    expect(late.body).toMatchObject({ error: 'invalid_client' });
  });
});
