import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';
import { newAgentKey, postJson, TestIssuer, tokenWithWit, witByJoinToken, workloadHeaders, wpt, wptWithClaims, type AgentKey } from '../support/workload.js';
import { computeAgentChecksum } from '../../src/identity/agent-checksum.js';

const API = 'https://api.example.com';
const CHECKSUM = computeAgentChecksum({ prompt: 'p', tools: [{ name: 't' }] });

describe('workload identity refusals', () => {
  let ts: TestServer;
  let trusted: TestIssuer;
  let untrusted: TestIssuer;
  const WIT_AGENT = agentId('w');
  const OTHER_WIT_AGENT = agentId('w2');
  const JWT_AGENT = agentId('j');
  const SUM_AGENT = agentId('sum');

  async function refusedAtToken(res: { status: number; body: any; headers: Headers }, pattern: RegExp) {
    expect(res.status, JSON.stringify(res.body)).toBe(401);
    expect(res.body.error).toBe('invalid_client');
    expect(res.body.error_description).toMatch(pattern);
    expect(res.headers.get('cache-control')).toMatch(/no-store/);
  }
  async function refusedAtWit(res: { status: number; body: any }, error: string, pattern: RegExp) {
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toBe(error);
    expect(res.body.error_description).toMatch(pattern);
  }
  const tokenHeaders = (wit: string, proof: string) => ({ 'workload-identity-token': wit, 'workload-proof-token': proof });
  const tokenRequest = (headers: Record<string, string>, client = WIT_AGENT) => postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: client }, headers);
  async function serverSigningKey() {
    const row = await ts.server.db.knex('signing_keys').where({ status: 'active', alg: 'EdDSA' }).first();
    const jwk = JSON.parse(row.private_jwk) as JWK;
    return { key: await importJWK(jwk, 'EdDSA'), kid: jwk.kid! };
  }

  let key: AgentKey;
  let wit: string;

  beforeAll(async () => {
    trusted = await new TestIssuer().start();
    untrusted = await new TestIssuer().start();
    // Every refusal here is checked by its detail: none is only counted (ANONYMOUS_REFUSALS_RECORDED).
    ts = await startTestServer({ TRUSTED_ISSUERS: trusted.trustedIssuersEnv(), ANONYMOUS_REFUSALS_RECORDED: '1000' });
    const attestors = [{ type: 'join_token' }, { type: 'wit' }];
    for (const id of [WIT_AGENT, OTHER_WIT_AGENT]) {
      expect((await ts.admin('POST', '/admin/agents', { id, token_endpoint_auth_method: 'wit', audiences: [API], attestors })).status).toBe(201);
    }
    await ts.admin('POST', '/admin/agents', { id: JWT_AGENT, token_endpoint_auth_method: 'wit', audiences: [API], attestors: [{ type: 'jwt', issuer: trusted.url, claims: { sub: 'ci:main', repository: 'example/agents' } }] });
    await ts.admin('POST', '/admin/agents', { id: SUM_AGENT, token_endpoint_auth_method: 'wit', audiences: [API], attestors, agent_checksums: [CHECKSUM] });
    key = await newAgentKey();
    wit = await witByJoinToken(ts, WIT_AGENT, key);
  });
  afterAll(async () => {
    await ts?.close();
    await trusted?.close();
    await untrusted?.close();
  });

  describe('at the token endpoint (WIT + WPT client authentication)', () => {
    it('refuses a replayed WPT, also after a restart', async () => {
      const headers = await workloadHeaders(ts, wit, key, '/token');
      expect((await tokenRequest(headers)).status).toBe(200);
      await refusedAtToken(await tokenRequest(headers), /already used/);
      await ts.restart({ TRUSTED_ISSUERS: trusted.trustedIssuersEnv() });
      await refusedAtToken(await tokenRequest(headers), /already used/);
    });

    it('refuses a WPT for another audience, signed by another key, or for another WIT', async () => {
      await refusedAtToken(await tokenRequest(tokenHeaders(wit, await wpt(wit, key, `${ts.issuer}/wit`))), /aud/);
      await refusedAtToken(await tokenRequest(tokenHeaders(wit, await wpt(wit, key, 'https://elsewhere.example/token'))), /aud/);
      const stranger = await newAgentKey();
      await refusedAtToken(await tokenRequest(tokenHeaders(wit, await wpt(wit, stranger, `${ts.issuer}/token`))), /signature/);
      const es = await newAgentKey('ES256');
      await refusedAtToken(await tokenRequest(tokenHeaders(wit, await wpt(wit, es, `${ts.issuer}/token`))), /alg/);
      const secondWit = await witByJoinToken(ts, WIT_AGENT, key);
      await refusedAtToken(await tokenRequest(tokenHeaders(wit, await wpt(secondWit, key, `${ts.issuer}/token`))), /wth/);
    });

    const withClaims = async (claims: Record<string, unknown>) => tokenRequest(tokenHeaders(wit, await wptWithClaims(wit, key, claims)));

    it('accepts a WPT with an empty oth; refuses oth entries it does not understand and an oth that is no object', async () => {
      const endpoint = `${ts.issuer}/token`;
      expect((await withClaims({ aud: endpoint, oth: {} })).status).toBe(200);
      await refusedAtToken(await withClaims({ aud: endpoint, oth: { 'x-user-token': 'n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg' } }), /oth/);
      for (const oth of [[], 'x', null]) await refusedAtToken(await withClaims({ aud: endpoint, oth }), /oth/);
    });

    it('one WPT for one endpoint: accepts aud as the endpoint or a one-element array of it; refuses an aud naming several endpoints', async () => {
      const endpoint = `${ts.issuer}/token`;
      expect((await withClaims({ aud: [endpoint] })).status).toBe(200);
      await refusedAtToken(await withClaims({ aud: [endpoint, `${ts.issuer}/wit`] }), /aud/);
      await refusedAtToken(await withClaims({ aud: [endpoint, endpoint] }), /aud/);
      await refusedAtToken(await withClaims({ aud: [] }), /aud/);
      await refusedAtToken(await withClaims({ aud: undefined }), /aud/);
      const renew = async (claims: Record<string, unknown>) => postJson(`${ts.url}/wit`, { agent_id: WIT_AGENT, jwk: key.jwk, attestation: { type: 'wit' } }, tokenHeaders(wit, await wptWithClaims(wit, key, claims)));
      await refusedAtWit(await renew({ aud: [endpoint, `${ts.issuer}/wit`] }), 'invalid_grant', /aud/);
    });

    it('refuses a long-lived WPT and one carrying ath without an access token', async () => {
      await refusedAtToken(await tokenRequest(tokenHeaders(wit, await wpt(wit, key, `${ts.issuer}/token`, { lifetime: 3600 }))), /within 300 seconds/);
      await refusedAtToken(await tokenRequest(tokenHeaders(wit, await wpt(wit, key, `${ts.issuer}/token`, { accessToken: 'x' }))), /ath/);
    });

    it('refuses an expired WIT', async () => {
      ts.clock.advance(3700);
      try {
        await refusedAtToken(await tokenRequest(await workloadHeaders(ts, wit, key, '/token')), /expired/);
      } finally {
        ts.clock.advance(-3700);
      }
    });

    it('refuses WITs from another issuer, unsigned or HMAC-signed WITs, and other token types presented as a WIT', async () => {
      const claims = decodeJwt(wit);
      const foreign = await generateKeyPair('EdDSA');
      const foreignWit = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'wit+jwt', kid: decodeJwt(wit).jti as string }).sign(foreign.privateKey);
      await refusedAtToken(await tokenRequest(tokenHeaders(foreignWit, await wpt(foreignWit, key, `${ts.issuer}/token`))), /not signed by a key of this server/);

      const ours = await serverSigningKey();
      const otherIss = await new SignJWT({ ...claims, iss: 'https://other-sts.example' }).setProtectedHeader({ alg: 'EdDSA', typ: 'wit+jwt', kid: ours.kid }).sign(ours.key);
      await refusedAtToken(await tokenRequest(tokenHeaders(otherIss, await wpt(otherIss, key, `${ts.issuer}/token`))), /iss/);
      // Correctly signed by us, but never issued (no record): refused too.
      const unrecorded = await new SignJWT({ ...claims, jti: 'never-issued-0123456789' }).setProtectedHeader({ alg: 'EdDSA', typ: 'wit+jwt', kid: ours.kid }).sign(ours.key);
      await refusedAtToken(await tokenRequest(tokenHeaders(unrecorded, await wpt(unrecorded, key, `${ts.issuer}/token`))), /not issued by this server/);

      const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const none = `${b64({ alg: 'none', typ: 'wit+jwt' })}.${b64(claims)}.`;
      await refusedAtToken(await tokenRequest(tokenHeaders(none, await wpt(none, key, `${ts.issuer}/token`))), /alg|malformed/);
      const hmac = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'wit+jwt', kid: ours.kid }).sign(new TextEncoder().encode('k'.repeat(32)));
      await refusedAtToken(await tokenRequest(tokenHeaders(hmac, await wpt(hmac, key, `${ts.issuer}/token`))), /alg/);

      // An access token of ours presented as a WIT.
      const secretAgent = agentId('plain');
      const secret = (await ts.admin('POST', '/admin/agents', { id: secretAgent, audiences: [API] })).body.client_secret as string;
      const at = (await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(secretAgent, secret) })).body.access_token as string;
      await refusedAtToken(await tokenRequest(tokenHeaders(at, await wpt(at, key, `${ts.issuer}/token`))), /typ/);
      // An ID-token-shaped JWT signed with our key, without the WIT typ.
      const idToken = await new SignJWT({ ...claims, aud: 'x', nonce: 'n' }).setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: ours.kid }).sign(ours.key);
      await refusedAtToken(await tokenRequest(tokenHeaders(idToken, await wpt(idToken, key, `${ts.issuer}/token`))), /typ/);
    });

    it('refuses half the headers, a WIT agent without a WIT, and a WIT used for another agent', async () => {
      await refusedAtToken(await tokenRequest({ 'workload-identity-token': wit }), /both/);
      const bare = await tokenRequest({});
      expect(bare.status).toBe(401);
      expect(bare.body.error).toBe('invalid_client');
      const withSecret = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: WIT_AGENT, client_secret: 'anything' });
      expect(withSecret.status).toBe(401);
      const res = await tokenRequest(await workloadHeaders(ts, wit, key, '/token'), OTHER_WIT_AGENT);
      expect(res.status).toBe(401);
      expect(res.body.error).toBe('invalid_client');
    });

    it('refuses a WIT of an agent that does not authenticate with WITs', async () => {
      const id = agentId('secret-with-wit');
      const secret = (await ts.admin('POST', '/admin/agents', { id, audiences: [API], attestors: [{ type: 'join_token' }] })).body.client_secret as string;
      expect(secret).toBeDefined();
      const k = await newAgentKey();
      const itsWit = await witByJoinToken(ts, id, k);
      await refusedAtToken(await tokenWithWit(ts, id, itsWit, k), /does not authenticate with a WIT/);
    });

    it('records each refusal as a decision', async () => {
      const events = await ts.admin('GET', '/admin/events?decision=refused&limit=200');
      const reasons = events.body.events.filter((e: { action: string }) => e.action === 'client_auth:/token').map((e: { detail: string }) => e.detail);
      for (const p of [/already used/, /aud/, /signature/, /wth/, /expired/, /typ/, /alg/]) expect(reasons.some((r: string) => p.test(r)), String(p)).toBe(true);
    });
  });

  describe('revocation and disabling', () => {
    it('a revoked WIT can neither authenticate nor renew, and the tokens obtained with it die with it', async () => {
      const k = await newAgentKey();
      const w = await witByJoinToken(ts, OTHER_WIT_AGENT, k);
      const at = (await tokenWithWit(ts, OTHER_WIT_AGENT, w, k)).body.access_token as string;
      const revoke = await postForm(`${ts.url}/token/revocation`, { token: w, client_id: OTHER_WIT_AGENT }, await workloadHeaders(ts, w, k, '/token/revocation'));
      expect(revoke.status, JSON.stringify(revoke.body)).toBe(200);
      await refusedAtToken(await tokenWithWit(ts, OTHER_WIT_AGENT, w, k), /revoked/);
      const renew = await postJson(`${ts.url}/wit`, { agent_id: OTHER_WIT_AGENT, jwk: k.jwk, attestation: { type: 'wit' } }, await workloadHeaders(ts, w, k, '/wit'));
      await refusedAtWit(renew, 'invalid_grant', /revoked/);
      const intro = await ts.admin('GET', `/admin/tokens/${decodeJwt(at).jti}`);
      expect(intro.body.revoked_at).not.toBeNull();
    });

    it('disabling an agent stops its WITs', async () => {
      const id = agentId('to-disable');
      await ts.admin('POST', '/admin/agents', { id, token_endpoint_auth_method: 'wit', audiences: [API], attestors: [{ type: 'join_token' }, { type: 'wit' }] });
      const k = await newAgentKey();
      const w = await witByJoinToken(ts, id, k);
      expect((await tokenWithWit(ts, id, w, k)).status).toBe(200);
      expect((await ts.admin('DELETE', `/admin/agents/${encodeURIComponent(id)}`)).status).toBe(200);
      await refusedAtToken(await tokenWithWit(ts, id, w, k), /revoked|not active/);
      const renew = await postJson(`${ts.url}/wit`, { agent_id: id, jwk: k.jwk, attestation: { type: 'wit' } }, await workloadHeaders(ts, w, k, '/wit'));
      expect(renew.status).toBe(400);
    });
  });

  describe('at POST /wit', () => {
    const joinToken = async (id = WIT_AGENT, ttl?: number) => (await ts.admin('POST', `/admin/agents/${encodeURIComponent(id)}/join-tokens`, ttl ? { ttl } : undefined)).body.join_token as string;
    const request = (body: Record<string, unknown>) => postJson(`${ts.url}/wit`, body);

    it('refuses a join token used twice, expired, or for another agent; concurrent redemptions get one WIT', async () => {
      const jt = await joinToken();
      const body = { agent_id: WIT_AGENT, jwk: key.jwk, attestation: { type: 'join_token', token: jt } };
      expect((await request(body)).status).toBe(200);
      await refusedAtWit(await request(body), 'invalid_grant', /already used/);

      const old = await joinToken(WIT_AGENT, 10);
      ts.clock.advance(30);
      try {
        await refusedAtWit(await request({ ...body, attestation: { type: 'join_token', token: old } }), 'invalid_grant', /expired/);
      } finally {
        ts.clock.advance(-30);
      }
      const others = await joinToken(OTHER_WIT_AGENT);
      await refusedAtWit(await request({ ...body, attestation: { type: 'join_token', token: others } }), 'invalid_grant', /another agent/);
      // Not burnt by the attempt: its own agent can still use it.
      expect((await request({ ...body, agent_id: OTHER_WIT_AGENT, attestation: { type: 'join_token', token: others } })).status).toBe(200);
      await refusedAtWit(await request({ ...body, attestation: { type: 'join_token', token: 'ajt_unknown' } }), 'invalid_grant', /not known/);

      const contested = await joinToken();
      const results = await Promise.all(Array.from({ length: 8 }, () => request({ ...body, attestation: { type: 'join_token', token: contested } })));
      expect(results.filter((r) => r.status === 200)).toHaveLength(1);
      expect(results.filter((r) => r.status === 400)).toHaveLength(7);
    });

    it('refuses attestation JWTs from an untrusted issuer, with other claims, another audience, expired or badly signed', async () => {
      const body = (token: string) => ({ agent_id: JWT_AGENT, jwk: key.jwk, attestation: { type: 'jwt', token } });
      const good = { sub: 'ci:main', repository: 'example/agents' };
      expect((await request(body(await trusted.sign(good)))).status).toBe(200);
      await refusedAtWit(await request(body(await untrusted.sign(good))), 'unauthorized_client', /does not accept jwt attestation from this issuer/);
      await refusedAtWit(await request(body(await trusted.sign({ ...good, repository: 'example/other' }))), 'invalid_grant', /repository claim does not match/);
      await refusedAtWit(await request(body(await trusted.sign({ ...good, aud: 'someone-else' }))), 'invalid_grant', /aud/);
      await refusedAtWit(await request(body(await trusted.sign(good, { expiresIn: -60 }))), 'invalid_grant', /expired/);
      const forged = (await generateKeyPair('ES256')).privateKey;
      await refusedAtWit(await request(body(await trusted.sign(good, { key: forged }))), 'invalid_grant', /signature/);
      await refusedAtWit(await request(body(await trusted.sign(good, { kid: 'unknown-kid' }))), 'invalid_grant', /unknown key|could not be verified/);
    });

    it('refuses an unregistered or missing checksum, private key material and unsupported keys', async () => {
      const sumBody = async (extra: Record<string, unknown>) => ({ agent_id: SUM_AGENT, jwk: key.jwk, attestation: { type: 'join_token', token: await joinToken(SUM_AGENT) }, ...extra });
      await refusedAtWit(await request(await sumBody({ agent_checksum: computeAgentChecksum({ prompt: 'other', tools: [] }) })), 'invalid_grant', /not one this agent registered/);
      await refusedAtWit(await request(await sumBody({})), 'invalid_request', /agent_checksum is required/);
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: key.jwk, attestation: { type: 'join_token', token: await joinToken() }, agent_checksum: CHECKSUM }), 'invalid_grant', /not one this agent registered/);

      const { privateKey } = await generateKeyPair('EdDSA', { extractable: true });
      const { exportJWK } = await import('jose');
      const privateJwk = { ...(await exportJWK(privateKey)), alg: 'EdDSA' };
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: privateJwk, attestation: { type: 'join_token', token: await joinToken() } }), 'invalid_request', /private key material/);
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: { ...key.jwk, alg: 'RS256' }, attestation: { type: 'join_token', token: 'x' } }), 'invalid_request', /alg/);
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: { ...key.jwk, alg: undefined }, attestation: { type: 'join_token', token: 'x' } }), 'invalid_request', /alg/);
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: { ...key.jwk, x: 'AAAA' }, attestation: { type: 'join_token', token: 'x' } }), 'invalid_request', /usable/);
    });

    it('refuses attestation types the agent does not accept, unknown agents and malformed requests', async () => {
      await refusedAtWit(await request({ agent_id: JWT_AGENT, jwk: key.jwk, attestation: { type: 'join_token', token: 'x' } }), 'unauthorized_client', /does not accept join_token/);
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: key.jwk, attestation: { type: 'tpm', token: 'x' } }), 'unauthorized_client', /does not accept tpm/);
      await refusedAtWit(await request({ agent_id: agentId('nobody'), jwk: key.jwk, attestation: { type: 'join_token', token: 'x' } }), 'invalid_grant', /no active agent/);
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: key.jwk }), 'invalid_request', /attestation/);
      await refusedAtWit(await request({ agent_id: WIT_AGENT, jwk: key.jwk, attestation: { type: 'join_token' }, extra: 1 }), 'invalid_request', /unknown field: extra/);
      const renewWithoutHeaders = await request({ agent_id: WIT_AGENT, jwk: key.jwk, attestation: { type: 'wit' } });
      await refusedAtWit(renewWithoutHeaders, 'invalid_grant', /Workload-Identity-Token/);
    });

    it('records each refusal as a decision', async () => {
      const events = await ts.admin('GET', '/admin/events?decision=refused&limit=300');
      const wit = events.body.events.filter((e: { action: string }) => e.action === 'wit');
      for (const reason of ['invalid_grant', 'invalid_request', 'unauthorized_client']) expect(wit.some((e: { reason: string }) => e.reason === reason)).toBe(true);
      expect(wit.some((e: { detail: string }) => /already used/.test(e.detail))).toBe(true);
    });
  });
});
