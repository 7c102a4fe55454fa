import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt, decodeProtectedHeader, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { serverSigningKey, signAsServer } from '../support/forgery.js';
import { agentId, enc, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';
import { AT, exchange, JWT, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';
import { newAgentKey, witByJoinToken } from '../support/workload.js';
import { readResponse } from '../support/http.js';

/**
 * Every way a token exchange (RFC 8693) can be refused, over HTTP: the exact RFC 6749 / 8693 error,
 * a description that says why, `Cache-Control: no-store`, never a 500, and a recorded decision event.
 * Each group has a positive control, so a refusal is known to be for the reason claimed.
 */

const ORCH_API = 'https://orchestrator.example/api';
const SPEC_API = 'https://specialist.example/api';
const SPEC_API_2 = 'https://specialist-2.example/api';
const TOOL = 'https://tools.example/mcp';
const GRANTS = ['client_credentials', TOKEN_EXCHANGE];
const ACTION = `token:${TOKEN_EXCHANGE}`;

type Res = Awaited<ReturnType<typeof postForm>>;

interface Expected {
  error: 'invalid_request' | 'invalid_grant' | 'invalid_scope' | 'invalid_target' | 'unauthorized_client' | 'invalid_client';
  why: RegExp;
  status?: number;
  /** The decision event's action, when not a token exchange. */
  action?: string;
}

async function lastEventId(ts: TestServer): Promise<number> {
  const res = await ts.admin('GET', '/admin/events?limit=1');
  expect(res.status).toBe(200);
  return (res.body.events[0]?.id as number | undefined) ?? 0;
}

/**
 * Sends a request that must be refused and checks the response and the single refusal event it
 * recorded for `clientId`.
 */
async function expectRefusal(ts: TestServer, clientId: string, send: () => Promise<Res>, expected: Expected): Promise<Res> {
  const before = await lastEventId(ts);
  const res = await send();
  const status = expected.status ?? 400;
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body.error, JSON.stringify(res.body)).toBe(expected.error);
  expect(typeof res.body.error_description, JSON.stringify(res.body)).toBe('string');
  expect(res.body.error_description).not.toBe('');
  if (expected.error !== 'invalid_client') expect(res.body.error_description).toMatch(expected.why);
  expect(res.body.access_token).toBeUndefined();
  expect(res.headers.get('cache-control')).toContain('no-store');
  expect(JSON.stringify(res.body)).not.toMatch(/\bat .+\.(ts|js):\d+/); // no stack trace

  const ev = await ts.admin('GET', `/admin/events?decision=refused&client_id=${enc(clientId)}&limit=20`);
  expect(ev.status).toBe(200);
  const fresh = (ev.body.events as { id: number; action: string; reason: string; detail: string | null; client_id: string }[]).filter((e) => e.id > before);
  expect(fresh, JSON.stringify(ev.body.events)).toHaveLength(1);
  const [event] = fresh;
  expect(event).toMatchObject({ decision: 'refused', action: expected.action ?? ACTION, client_id: clientId, reason: expected.error });
  expect(event!.detail, JSON.stringify(event)).toEqual(expect.any(String));
  expect(event!.detail).toMatch(expected.why);
  return res;
}

function expectOk(res: Res): void {
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  expect(res.body.access_token).toEqual(expect.any(String));
}

/** POSTs form fields in order, repeats allowed. */
async function postPairs(url: string, pairs: [string, string][], headers: Record<string, string>): Promise<Res> {
  return readResponse(await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(pairs).toString(),
  }));
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

async function ccToken(agent: SecretAgent, form: Record<string, string> = {}): Promise<string> {
  const res = await agent.token({ grant_type: 'client_credentials', ...form });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.access_token as string;
}

describe('token exchange refusals', () => {
  let ts: TestServer;
  let frontend: SecretAgent;
  let orchestrator: SecretAgent;
  let specialist: SecretAgent;
  let loner: SecretAgent;
  let reluctant: SecretAgent;
  let txnOnly: SecretAgent;
  let jwtOnly: SecretAgent;
  let ccOnly: SecretAgent;
  let shallow: SecretAgent;

  /** A token of the frontend holding every scope it has: orders:read orders:write tools:search. */
  let root: string;
  const withRoot = (form: Record<string, string> = {}): Record<string, string> => ({ subject_token: root, subject_token_type: AT, ...form });

  beforeAll(async () => {
    ts = await startTestServer();
    frontend = await registerSecretAgent(ts, { id: agentId('frontend'), scopes: ['orders:read', 'orders:write', 'tools:search'], audiences: [ORCH_API] });
    orchestrator = await registerSecretAgent(ts, {
      id: agentId('orchestrator'), grant_types: GRANTS, scopes: ['orders:read', 'tools:search'], audiences: [SPEC_API, SPEC_API_2],
      token_exchange: { may_act_for_others: true }, attestors: [{ type: 'join_token' }],
    });
    specialist = await registerSecretAgent(ts, {
      id: agentId('specialist'), grant_types: GRANTS, scopes: ['tools:search', 'orders:write'], audiences: [TOOL], token_exchange: { may_act_for_others: true },
    });
    loner = await registerSecretAgent(ts, { id: agentId('loner'), grant_types: GRANTS, scopes: ['orders:read'], audiences: [ORCH_API] });
    reluctant = await registerSecretAgent(ts, {
      id: agentId('reluctant'), grant_types: GRANTS, scopes: ['orders:read'], audiences: [ORCH_API], token_exchange: { may_act_for_others: false },
    });
    txnOnly = await registerSecretAgent(ts, {
      id: agentId('txn-only'), grant_types: GRANTS, scopes: ['orders:read'], audiences: [TOOL], token_exchange: { may_act_for_others: true, subject_token_types: [TXN] },
    });
    jwtOnly = await registerSecretAgent(ts, {
      id: agentId('jwt-only'), grant_types: GRANTS, scopes: ['orders:read'], audiences: [TOOL], token_exchange: { may_act_for_others: true, subject_token_types: [JWT] },
    });
    ccOnly = await registerSecretAgent(ts, {
      id: agentId('cc-only'), grant_types: ['client_credentials'], scopes: ['orders:read'], audiences: [TOOL], token_exchange: { may_act_for_others: true },
    });
    shallow = await registerSecretAgent(ts, {
      id: agentId('shallow'), grant_types: GRANTS, scopes: ['orders:read', 'tools:search'], audiences: [TOOL], max_delegation_depth: 1, token_exchange: { may_act_for_others: true },
    });
    root = await ccToken(frontend);
    expect(decodeJwt(root).scope).toBe('orders:read orders:write tools:search');
  });
  afterAll(async () => {
    await ts?.close();
  });

  describe('scope can only narrow', () => {
    it('first hop: a scope the subject token lacks, or one the requester is not allowed → invalid_scope', async () => {
      const narrow = await ccToken(frontend, { scope: 'orders:read orders:write' });
      // tools:search: allowed for the orchestrator, but the subject token doesn't hold it.
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: narrow, subject_token_type: AT, scope: 'orders:read tools:search' }),
        { error: 'invalid_scope', why: /not held by the subject token: tools:search/ });
      // orders:write: held by the subject token, but not one of the orchestrator's scopes.
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: narrow, subject_token_type: AT, scope: 'orders:write' }),
        { error: 'invalid_scope', why: /not allowed for this agent: orders:write/ });
      // Control: the same request without the widening.
      const ok = await exchange(orchestrator, { subject_token: narrow, subject_token_type: AT, scope: 'orders:read' });
      expectOk(ok);
      expect(decodeJwt(ok.body.access_token).scope).toBe('orders:read');
    });

    it('later hop: narrowing is against the token presented, not the root', async () => {
      const hop1 = await exchange(orchestrator, withRoot());
      expectOk(hop1);
      expect(decodeJwt(hop1.body.access_token).scope).toBe('orders:read tools:search');
      const form = { subject_token: hop1.body.access_token as string, subject_token_type: AT };
      // orders:write: the root holds it and the specialist is allowed it, but hop 1 dropped it.
      await expectRefusal(ts, specialist.id, () => exchange(specialist, { ...form, scope: 'orders:write' }),
        { error: 'invalid_scope', why: /not held by the subject token: orders:write/ });
      // orders:read: hop 1 holds it, the specialist may not have it.
      await expectRefusal(ts, specialist.id, () => exchange(specialist, { ...form, scope: 'orders:read' }),
        { error: 'invalid_scope', why: /not allowed for this agent: orders:read/ });
      const ok = await exchange(specialist, { ...form, scope: 'tools:search' });
      expectOk(ok);
      expect(decodeJwt(ok.body.access_token)).toMatchObject({ scope: 'tools:search', act: { sub: specialist.id, act: { sub: orchestrator.id } } });
    });
  });

  describe('audience', () => {
    it('refuses an audience the requester has not registered, as resource or as audience → invalid_target', async () => {
      for (const param of ['resource', 'audience']) {
        await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ [param]: TOOL })),
          { error: 'invalid_target', why: /not a registered audience of this agent/ });
        // The subject's own audience is not the requester's either.
        await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ [param]: ORCH_API })),
          { error: 'invalid_target', why: /not a registered audience of this agent/ });
      }
      const ok = await exchange(orchestrator, withRoot({ resource: SPEC_API_2 }));
      expectOk(ok);
      expect(decodeJwt(ok.body.access_token).aud).toBe(SPEC_API_2);
    });

    it('refuses two audiences at once, even when both are registered → invalid_target', async () => {
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ resource: SPEC_API, audience: SPEC_API_2 })),
        { error: 'invalid_target', why: /one audience/ });
      await expectRefusal(ts, orchestrator.id, () => postPairs(`${ts.url}/token`, [
        ['grant_type', TOKEN_EXCHANGE], ['subject_token', root], ['subject_token_type', AT], ['resource', SPEC_API], ['resource', SPEC_API_2],
      ], orchestrator.auth), { error: 'invalid_target', why: /one audience/ });
      await expectRefusal(ts, orchestrator.id, () => postPairs(`${ts.url}/token`, [
        ['grant_type', TOKEN_EXCHANGE], ['subject_token', root], ['subject_token_type', AT], ['audience', SPEC_API], ['audience', SPEC_API_2],
      ], orchestrator.auth), { error: 'invalid_target', why: /one audience/ });
      // The same audience twice is still two.
      const same = await postPairs(`${ts.url}/token`, [
        ['grant_type', TOKEN_EXCHANGE], ['subject_token', root], ['subject_token_type', AT], ['resource', SPEC_API], ['audience', SPEC_API],
      ], orchestrator.auth);
      expect(same.status).toBe(400);
      expect(same.body.error).toBe('invalid_target');
      expectOk(await exchange(orchestrator, withRoot({ audience: SPEC_API })));
    });
  });

  describe('the subject token must be valid', () => {
    it('refuses an expired subject token → invalid_grant', async () => {
      const t = await ccToken(frontend);
      const exp = decodeJwt(t).exp!;
      const shift = exp - Math.floor(Date.now() / 1000) + 60;
      ts.clock.advance(shift);
      try {
        await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: t, subject_token_type: AT }),
          { error: 'invalid_grant', why: /expired/ });
      } finally {
        ts.clock.advance(-shift);
      }
      expectOk(await exchange(orchestrator, { subject_token: t, subject_token_type: AT }));
    });

    it('refuses a subject token at or just past its expiry, inside the clock tolerance: nothing left to issue → invalid_grant, nothing recorded', async () => {
      const t = await ccToken(frontend);
      const exp = decodeJwt(t).exp!;
      const issuedBefore = Number((await ts.server.db.knex('issued_tokens').count('* as n').first())!.n);
      for (const past of [0, 2]) {
        const shift = exp - Math.floor(Date.now() / 1000) + past;
        ts.clock.advance(shift);
        try {
          await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: t, subject_token_type: AT, scope: 'orders:read' }),
            { error: 'invalid_grant', why: /expired/ });
        } finally {
          ts.clock.advance(-shift);
        }
      }
      expect(Number((await ts.server.db.knex('issued_tokens').count('* as n').first())!.n)).toBe(issuedBefore);
      expectOk(await exchange(orchestrator, { subject_token: t, subject_token_type: AT, scope: 'orders:read' }));
    });

    it('refuses a revoked subject token → invalid_grant', async () => {
      const t = await ccToken(frontend);
      expectOk(await exchange(orchestrator, { subject_token: t, subject_token_type: AT }));
      const revoked = await postForm(`${ts.url}/token/revocation`, { token: t }, frontend.auth);
      expect(revoked.status).toBe(200);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: t, subject_token_type: AT }),
        { error: 'invalid_grant', why: /revoked/ });
    });

    it('refuses a subject token the server signed but has no record of, or revoked, for every token it would issue → invalid_grant, nothing recorded as issued', async () => {
      const unrecorded = await signAsServer(ts, { ...decodeJwt(root), jti: 'never-recorded' });
      const revokedToken = await ccToken(frontend);
      expect((await postForm(`${ts.url}/token/revocation`, { token: revokedToken }, frontend.auth)).status).toBe(200);
      const requests: Record<string, string>[] = [
        { scope: 'orders:read' },
        { requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' },
      ];
      const issuedBefore = Number((await ts.server.db.knex('issued_tokens').count('* as n').first())!.n);
      for (const form of requests) {
        await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: unrecorded, subject_token_type: AT, ...form }),
          { error: 'invalid_grant', why: /not issued by this server/ });
        await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: revokedToken, subject_token_type: AT, ...form }),
          { error: 'invalid_grant', why: /has been revoked/ });
      }
      expect(Number((await ts.server.db.knex('issued_tokens').count('* as n').first())!.n)).toBe(issuedBefore);
      for (const form of requests) expectOk(await exchange(orchestrator, withRoot(form)));
    });

    it('refuses a subject token with the same claims signed by a foreign key → invalid_grant', async () => {
      const header = decodeProtectedHeader(root);
      const { privateKey } = await generateKeyPair('EdDSA');
      const forged = await new SignJWT(decodeJwt(root)).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: header.kid! }).sign(privateKey);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: forged, subject_token_type: AT }),
        { error: 'invalid_grant', why: /signature/ });
      const unknownKid = await new SignJWT(decodeJwt(root)).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'attacker-1' }).sign(privateKey);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: unknownKid, subject_token_type: AT }),
        { error: 'invalid_grant', why: /key/ });
    });

    it('refuses an altered subject token (payload changed, original signature) → invalid_grant', async () => {
      const [h, , s] = root.split('.');
      const claims = { ...decodeJwt(root), scope: 'orders:read orders:write tools:search admin' };
      const altered = `${h}.${b64(claims)}.${s}`;
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: altered, subject_token_type: AT }),
        { error: 'invalid_grant', why: /signature/ });
    });

    it('refuses an unsigned (alg: none) subject token → invalid_grant', async () => {
      const header = decodeProtectedHeader(root);
      const unsigned = `${b64({ alg: 'none', typ: 'at+jwt', kid: header.kid })}.${root.split('.')[1]}.`;
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: unsigned, subject_token_type: AT }),
        { error: 'invalid_grant', why: /alg|malformed/ });
      // Not a JWT at all.
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: 'not-a-token', subject_token_type: AT }),
        { error: 'invalid_grant', why: /malformed/ });
      expectOk(await exchange(orchestrator, withRoot()));
    });
    it('refuses subject tokens signed with the server\'s keys that break the JWS rules → invalid_grant', async () => {
      // The genuine token with a character base64url has no place for in its signature.
      const [h, p, sig] = root.split('.');
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: `${h}.${p}.${sig!.slice(0, 8)}*${sig!.slice(8)}`, subject_token_type: AT }),
        { error: 'invalid_grant', why: /malformed/ });
      // A critical header extension nobody here understands.
      const server = await serverSigningKey(ts);
      const withCrit = await new SignJWT(decodeJwt(root)).setProtectedHeader({ alg: server.alg, kid: server.kid, typ: 'at+jwt', crit: ['x-hop'], 'x-hop': 1 }).sign(server.key, { crit: { 'x-hop': true } });
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: withCrit, subject_token_type: AT }),
        { error: 'invalid_grant', why: /malformed/ });
      // Signed by the Biscuit root key, which is published but signs Biscuits only.
      const row = await ts.server.db.knex('signing_keys').where({ status: 'active', alg: 'Biscuit' }).first();
      const biscuitJwk = JSON.parse(row.private_jwk) as JWK;
      const byBiscuitRoot = await new SignJWT(decodeJwt(root)).setProtectedHeader({ alg: 'EdDSA', kid: biscuitJwk.kid!, typ: 'at+jwt' }).sign(await importJWK(biscuitJwk, 'EdDSA'));
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: byBiscuitRoot, subject_token_type: AT }),
        { error: 'invalid_grant', why: /not signed by a key of this server/ });
      // The server's ES256 key naming the EdDSA key's kid.
      const es = await serverSigningKey(ts, 'ES256');
      const crossed = await new SignJWT(decodeJwt(root)).setProtectedHeader({ alg: 'ES256', kid: server.kid, typ: 'at+jwt' }).sign(es.key);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: crossed, subject_token_type: AT }),
        { error: 'invalid_grant', why: /signature/ });
      expectOk(await exchange(orchestrator, withRoot()));
    });
  });

  describe('actor token', () => {
    it('refuses an actor token of another agent than the authenticated client → invalid_grant', async () => {
      const specialistOwn = await ccToken(specialist);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ actor_token: specialistOwn, actor_token_type: AT })),
        { error: 'invalid_grant', why: /actor_token is not the authenticated client's/ });
      const orchestratorOwn = await ccToken(orchestrator);
      const ok = await exchange(orchestrator, withRoot({ actor_token: orchestratorOwn, actor_token_type: AT }));
      expectOk(ok);
      expect(decodeJwt(ok.body.access_token).act).toEqual({ sub: orchestrator.id });
      // The specialist can't present the orchestrator's WIT either; the orchestrator can.
      const wit = await witByJoinToken(ts, orchestrator.id, await newAgentKey());
      const t = await ccToken(frontend);
      await expectRefusal(ts, specialist.id, () => exchange(specialist, { subject_token: t, subject_token_type: AT, actor_token: wit, actor_token_type: JWT }),
        { error: 'invalid_grant', why: /actor_token is not the authenticated client's/ });
      expectOk(await exchange(orchestrator, withRoot({ actor_token: wit, actor_token_type: JWT })));
    });

    it('refuses actor_token without actor_token_type and the other way round → invalid_request', async () => {
      const own = await ccToken(orchestrator);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ actor_token: own })),
        { error: 'invalid_request', why: /actor_token_type is required/ });
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ actor_token_type: AT })),
        { error: 'invalid_request', why: /actor_token_type was given without actor_token/ });
    });
  });

  describe('delegation depth and exchange policy', () => {
    it('refuses a token one hop deeper than the agent\'s max_delegation_depth → invalid_request', async () => {
      // One hop: allowed.
      const direct = await exchange(shallow, withRoot());
      expectOk(direct);
      expect(decodeJwt(direct.body.access_token).act).toEqual({ sub: shallow.id });
      // Two hops: frontend → orchestrator → shallow.
      const hop1 = await exchange(orchestrator, withRoot());
      expectOk(hop1);
      await expectRefusal(ts, shallow.id, () => exchange(shallow, { subject_token: hop1.body.access_token, subject_token_type: AT }),
        { error: 'invalid_request', why: /delegation depth 2 exceeds the limit of 1/ });
      // Exchanging its own (depth 1) token again adds no hop.
      expectOk(await exchange(shallow, { subject_token: direct.body.access_token, subject_token_type: AT }));
    });

    it('refuses an agent that may not act for others (may_act_for_others absent or false) → unauthorized_client', async () => {
      for (const agent of [loner, reluctant]) {
        await expectRefusal(ts, agent.id, () => exchange(agent, withRoot()),
          { error: 'unauthorized_client', why: /may not act for others/ });
        // Control: its own token it may exchange.
        const own = await ccToken(agent);
        expectOk(await exchange(agent, { subject_token: own, subject_token_type: AT }));
      }
    });

    it('refuses a subject_token_type outside the agent\'s token_exchange.subject_token_types → unauthorized_client', async () => {
      await expectRefusal(ts, txnOnly.id, () => exchange(txnOnly, withRoot()),
        { error: 'unauthorized_client', why: /may not exchange subject tokens of type urn:ietf:params:oauth:token-type:access_token/ });
      // Control: a Txn-Token it may replace.
      const txn = await exchange(orchestrator, withRoot({ requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }));
      expectOk(txn);
      expectOk(await exchange(txnOnly, { subject_token: txn.body.access_token, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }));

      // An agent allowed only the `jwt` type: the same access token as `jwt` passes, as `access_token` not.
      await expectRefusal(ts, jwtOnly.id, () => exchange(jwtOnly, withRoot()),
        { error: 'unauthorized_client', why: /may not exchange subject tokens of type urn:ietf:params:oauth:token-type:access_token/ });
      expectOk(await exchange(jwtOnly, { subject_token: root, subject_token_type: JWT }));
      // Without a list of types, every supported type is allowed (external issuers still need subject_issuers).
      expectOk(await exchange(orchestrator, { subject_token: root, subject_token_type: JWT }));
    });

    it('refuses an agent without the token-exchange grant type with unauthorized_client (RFC 6749 §5.2)', async () => {
      await expectRefusal(ts, ccOnly.id, () => exchange(ccOnly, withRoot()),
        { error: 'unauthorized_client', why: /grant type is not allowed for this client/ });
      // Control: the same agent may use client credentials.
      await ccToken(ccOnly);
    });

    it('refuses a failed client authentication → 401 invalid_client', async () => {
      await expectRefusal(ts, orchestrator.id, () => postForm(`${ts.url}/token`, { grant_type: TOKEN_EXCHANGE, ...withRoot() },
        { authorization: basic(orchestrator.id, `${orchestrator.secret}x`) }), { error: 'invalid_client', status: 401, why: /./ });
    });
  });

  describe('Transaction Tokens', () => {
    const txnForm = (form: Record<string, string> = {}) => withRoot({ requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read', ...form });
    let txnToken: string;
    const details = { tool: 'search', query: 'open orders' };

    beforeAll(async () => {
      const res = await exchange(orchestrator, txnForm({ request_details: JSON.stringify(details), request_context: JSON.stringify({ trace_id: 't-1' }) }));
      expectOk(res);
      txnToken = res.body.access_token as string;
    });
    const replace = (form: Record<string, string> = {}) => ({ subject_token: txnToken, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read', ...form });

    it('refuses an audience other than the trust domain, a missing one, or two → invalid_target', async () => {
      for (const form of [{ audience: 'other-domain.test' }, { audience: SPEC_API }, { audience: `spiffe://${TRUST_DOMAIN}` }]) {
        await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, txnForm(form)), { error: 'invalid_target', why: /audience must be the trust domain/ });
      }
      const { audience: _a, ...noAudience } = txnForm();
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, noAudience), { error: 'invalid_target', why: /audience must be the trust domain/ });
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, txnForm({ resource: TRUST_DOMAIN })), { error: 'invalid_target', why: /audience must be the trust domain/ });
      // The same for a replacement.
      const { audience: _b, ...replaceNoAudience } = replace();
      await expectRefusal(ts, specialist.id, () => exchange(specialist, replaceNoAudience), { error: 'invalid_target', why: /audience must be the trust domain/ });
      expectOk(await exchange(orchestrator, txnForm()));
    });

    it('refuses a Txn-Token with a scope the requester is not allowed → invalid_scope', async () => {
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, txnForm({ scope: 'orders:write' })),
        { error: 'invalid_scope', why: /not allowed for this agent: orders:write/ });
    });

    it('refuses a replacement that widens the scope → invalid_scope', async () => {
      await expectRefusal(ts, specialist.id, () => exchange(specialist, replace({ scope: 'orders:read tools:search' })),
        { error: 'invalid_scope', why: /not held by the subject token: tools:search/ });
      await expectRefusal(ts, specialist.id, () => exchange(specialist, replace({ scope: 'orders:write' })),
        { error: 'invalid_scope', why: /not held by the subject token: orders:write/ });
      const ok = await exchange(specialist, replace({ scope: 'orders:read' }));
      expectOk(ok);
      expect(decodeJwt(ok.body.access_token)).toMatchObject({ scope: 'orders:read', txn: decodeJwt(txnToken).txn });
    });

    it('refuses a replacement whose request_details or request_context changes a key → invalid_request; adding keys is fine', async () => {
      await expectRefusal(ts, specialist.id, () => exchange(specialist, replace({ request_details: JSON.stringify({ tool: 'delete' }) })),
        { error: 'invalid_request', why: /request_details may only add.*tool is already set/ });
      await expectRefusal(ts, specialist.id, () => exchange(specialist, replace({ request_context: JSON.stringify({ trace_id: 't-2' }) })),
        { error: 'invalid_request', why: /request_context may only add.*trace_id is already set/ });
      // Positive control: new keys, and a repeated key with its same value.
      const ok = await exchange(specialist, replace({ request_details: JSON.stringify({ tool: 'search', page: 2 }), request_context: JSON.stringify({ span: 's-1' }) }));
      expectOk(ok);
      const claims = decodeJwt(ok.body.access_token);
      expect(claims.tctx).toEqual({ ...details, page: 2 });
      expect(claims.rctx).toMatchObject({ trace_id: 't-1', span: 's-1', authn: 'client_secret_basic' });
    });

    it('refuses an expired Txn-Token as subject → invalid_grant', async () => {
      const fresh = await exchange(orchestrator, txnForm());
      expectOk(fresh);
      const t = fresh.body.access_token as string;
      const shift = decodeJwt(t).exp! - Math.floor(Date.now() / 1000) + 60;
      ts.clock.advance(shift);
      try {
        await expectRefusal(ts, specialist.id, () => exchange(specialist, { subject_token: t, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }),
          { error: 'invalid_grant', why: /Txn-Token has expired/ });
      } finally {
        ts.clock.advance(-shift);
      }
      expectOk(await exchange(specialist, { subject_token: t, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }));
    });

    it('refuses a malformed request_context or request_details → invalid_request', async () => {
      const malformed = ['not json', '[1,2]', Buffer.from('[1,2]').toString('base64url'), '"a string"', '42', 'null', '{"a":'];
      for (const value of malformed) {
        await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, txnForm({ request_context: value })),
          { error: 'invalid_request', why: /request_context must be a JSON object/ });
      }
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, txnForm({ request_details: '[1,2]' })),
        { error: 'invalid_request', why: /request_details must be a JSON object/ });
      // Control: plain and base64url JSON objects.
      expectOk(await exchange(orchestrator, txnForm({ request_context: '{"a":1}', request_details: Buffer.from('{"b":2}').toString('base64url') })));
    });
  });

  describe('typ confusion: a token never passes for another type', () => {
    it('refuses a Txn-Token as access_token, an access token as txn_token, a WIT as access_token, an access token as a WIT actor → invalid_grant', async () => {
      const txn = await exchange(orchestrator, withRoot({ requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }));
      expectOk(txn);
      const txnToken = txn.body.access_token as string;
      await expectRefusal(ts, specialist.id, () => exchange(specialist, { subject_token: txnToken, subject_token_type: AT }),
        { error: 'invalid_grant', why: /access token typ/ });
      await expectRefusal(ts, specialist.id, () => exchange(specialist, { subject_token: root, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }),
        { error: 'invalid_grant', why: /Txn-Token typ/ });
      const wit = await witByJoinToken(ts, orchestrator.id, await newAgentKey());
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: wit, subject_token_type: AT }),
        { error: 'invalid_grant', why: /access token typ/ });
      const own = await ccToken(orchestrator);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ actor_token: own, actor_token_type: JWT })),
        { error: 'invalid_grant', why: /WIT typ/ });
      // And a Txn-Token is no actor token either.
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ actor_token: txnToken, actor_token_type: AT })),
        { error: 'invalid_grant', why: /access token typ/ });
      // Controls: each token under its own type.
      expectOk(await exchange(specialist, { subject_token: txnToken, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }));
      expectOk(await exchange(orchestrator, withRoot({ actor_token: wit, actor_token_type: JWT })));
      expectOk(await exchange(orchestrator, withRoot({ actor_token: own, actor_token_type: AT })));
    });
  });

  describe('malformed requests', () => {
    it('refuses unknown subject_token_type, actor_token_type and requested_token_type → invalid_request', async () => {
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: root, subject_token_type: 'urn:example:token-type:unknown' }),
        { error: 'invalid_request', why: /unsupported subject_token_type/ });
      const own = await ccToken(orchestrator);
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ actor_token: own, actor_token_type: 'urn:example:token-type:unknown' })),
        { error: 'invalid_request', why: /unsupported actor_token_type/ });
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, withRoot({ requested_token_type: 'urn:example:token-type:unknown' })),
        { error: 'invalid_request', why: /unsupported requested_token_type/ });
    });

    it('refuses a missing subject_token or subject_token_type → invalid_request', async () => {
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token_type: AT }),
        { error: 'invalid_request', why: /missing required parameter subject_token\b/ });
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: root }),
        { error: 'invalid_request', why: /missing required parameter subject_token_type/ });
      await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: '', subject_token_type: AT }),
        { error: 'invalid_request', why: /missing required parameter subject_token\b/ });
    });

    it('refuses subject_token (or another single parameter) given twice → invalid_request', async () => {
      for (const name of ['subject_token', 'subject_token_type', 'scope', 'requested_token_type']) {
        const value = name === 'subject_token' ? root : name === 'subject_token_type' ? AT : name === 'scope' ? 'orders:read' : AT;
        const base: [string, string][] = [['grant_type', TOKEN_EXCHANGE], ['subject_token', root], ['subject_token_type', AT], ['scope', 'orders:read'], ['requested_token_type', AT]];
        await expectRefusal(ts, orchestrator.id, () => postPairs(`${ts.url}/token`, [...base, [name, value]], orchestrator.auth),
          { error: 'invalid_request', why: new RegExp(`${name}.*must not be provided twice`) });
      }
      expectOk(await postPairs(`${ts.url}/token`, [['grant_type', TOKEN_EXCHANGE], ['subject_token', root], ['subject_token_type', AT]], orchestrator.auth));
    });
  });
});

describe('token exchange refusals: server limits', () => {
  let ts: TestServer;
  let frontend: SecretAgent;
  let a: SecretAgent;
  let b: SecretAgent;
  let c: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer({ MAX_TXN_TOKENS_PER_TXN: '3' });
    frontend = await registerSecretAgent(ts, { id: agentId('frontend'), scopes: ['orders:read'], audiences: [ORCH_API] });
    const hop = (name: string) => registerSecretAgent(ts, {
      id: agentId(name), grant_types: GRANTS, scopes: ['orders:read'], audiences: [TOOL], max_delegation_depth: 3, token_exchange: { may_act_for_others: true },
    });
    a = await hop('a');
    b = await hop('b');
    c = await hop('c');
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('refuses a replacement beyond MAX_TXN_TOKENS_PER_TXN → invalid_request', async () => {
    const root = await ccToken(frontend);
    const first = await exchange(a, { subject_token: root, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' });
    expectOk(first);
    let current = first.body.access_token as string;
    const replace = (agent: SecretAgent) => exchange(agent, { subject_token: current, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' });
    // 1 issued + 2 replacements = 3 Txn-Tokens in the transaction.
    for (const agent of [b, c]) {
      const res = await replace(agent);
      expectOk(res);
      current = res.body.access_token as string;
    }
    // By the last workload again (the call chain a → b → c does not grow), so it is the count that refuses.
    await expectRefusal(ts, c.id, () => replace(c), { error: 'invalid_request', why: /maximum of 3 Txn-Tokens/ });
    const txn = decodeJwt(current).txn as string;
    const listed = await ts.admin('GET', `/admin/tokens?txn=${enc(txn)}&type=txn_token`);
    expect(listed.body.tokens).toHaveLength(3);
    // Control: a new transaction from the same subject starts its own count.
    expectOk(await exchange(a, { subject_token: root, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' }));
  });

  it('keeps the per-transaction limit under concurrent replacements', async () => {
    // A burst of replacements of one Txn-Token, in several fresh transactions: the count must hold in each.
    const root = await ccToken(frontend);
    // Each agent authenticates once first, so the burst isn't spread out by the slow secret hash.
    for (const agent of [a, b, c]) await ccToken(agent);
    const overLimit: string[] = [];
    for (let round = 0; round < 5; round++) {
      const first = await exchange(a, { subject_token: root, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' });
      expectOk(first);
      const txnToken = first.body.access_token as string;
      const results = await Promise.all(Array.from({ length: 3 }, () => [a, b, c]).flat().map((agent) =>
        exchange(agent, { subject_token: txnToken, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read' })));
      for (const r of results) expect(r.status, JSON.stringify(r.body)).not.toBe(500);
      for (const r of results.filter((x) => x.status !== 200)) {
        expect(r.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/maximum of 3 Txn-Tokens/) });
        expect(r.headers.get('cache-control')).toContain('no-store');
      }
      const listed = await ts.admin('GET', `/admin/tokens?txn=${enc(decodeJwt(txnToken).txn as string)}&type=txn_token`);
      const ok = results.filter((r) => r.status === 200).length;
      // The first and two replacements, no more.
      if (listed.body.tokens.length > 3 || ok !== 2) overLimit.push(`round ${round}: ${ok} of ${results.length} concurrent replacements succeeded, ${listed.body.tokens.length} Txn-Tokens in the transaction`);
    }
    expect(overLimit).toEqual([]);
  });

  it('refuses a token deeper than the server\'s MAX_DELEGATION_DEPTH, even for an agent registered with a higher limit → invalid_request', async () => {
    // The agents were registered with max_delegation_depth 3 under the default server maximum (5); now the server allows 2.
    await ts.restart({ MAX_DELEGATION_DEPTH: '2' });
    const root = await ccToken(frontend);
    const hop1 = await exchange(a, { subject_token: root, subject_token_type: AT });
    expectOk(hop1);
    const hop2 = await exchange(b, { subject_token: hop1.body.access_token, subject_token_type: AT });
    expectOk(hop2);
    expect(decodeJwt(hop2.body.access_token).act).toEqual({ sub: b.id, act: { sub: a.id } });
    await expectRefusal(ts, c.id, () => exchange(c, { subject_token: hop2.body.access_token, subject_token_type: AT }),
      { error: 'invalid_request', why: /delegation depth 3 exceeds the limit of 2/ });
  });
});

describe('token exchange refusals: a Txn-Token keeps the call chain and never outlives its subject', () => {
  const BISCUIT = 'urn:agent-sts:params:oauth:token-type:biscuit';
  const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
  let ts: TestServer;
  let frontend: SecretAgent;
  let specialist: SecretAgent;
  let orchestrator: SecretAgent;
  let deepOrchestrator: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    frontend = await registerSecretAgent(ts, { id: agentId('frontend'), scopes: ['orders:read'], audiences: [ORCH_API] });
    const agent = (name: string, depth: number) => registerSecretAgent(ts, {
      id: agentId(name), grant_types: [...GRANTS, JWT_BEARER], scopes: ['orders:read'], audiences: [TOOL], max_delegation_depth: depth,
      token_exchange: { may_act_for_others: true },
    });
    specialist = await agent('specialist', 3);
    orchestrator = await agent('orchestrator', 1);
    deepOrchestrator = await agent('deep-orchestrator', 3);
  });
  afterAll(async () => {
    await ts?.close();
  });

  const txnFrom = (agent: SecretAgent, subject: string, type: string, form: Record<string, string> = {}) =>
    exchange(agent, { subject_token: subject, subject_token_type: type, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read', ...form });

  it('refuses a Txn-Token subject for anything but a Txn-Token (access token, Biscuit, JWT grant, jwt-bearer assertion) → invalid_request, recorded', async () => {
    const root = await ccToken(frontend);
    const delegated = await exchange(specialist, { subject_token: root, subject_token_type: AT });
    expectOk(delegated);
    const txn = await txnFrom(specialist, delegated.body.access_token, AT);
    expectOk(txn);
    const txnToken = txn.body.access_token as string;
    for (const requested of [AT, BISCUIT, JWT]) {
      for (const agent of [orchestrator, deepOrchestrator, specialist]) {
        await expectRefusal(ts, agent.id, () => exchange(agent, { subject_token: txnToken, subject_token_type: TXN, requested_token_type: requested, audience: TOOL }),
          { error: 'invalid_request', why: /Txn-Token subject may only be replaced by a Txn-Token/ });
      }
    }
    // The default requested_token_type is an access token: refused the same way.
    await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: txnToken, subject_token_type: TXN }),
      { error: 'invalid_request', why: /Txn-Token subject may only be replaced by a Txn-Token/ });
    // Nor is a Txn-Token an authorization grant for jwt-bearer.
    await expectRefusal(ts, orchestrator.id, () => orchestrator.token({ grant_type: JWT_BEARER, assertion: txnToken }),
      { error: 'invalid_request', why: /Txn-Token is not an authorization grant/, action: `token:${JWT_BEARER}` });
    // Control: replaced by a Txn-Token.
    expectOk(await txnFrom(deepOrchestrator, txnToken, TXN));
  });

  it('keeps the actor chain in a Txn-Token and its replacements, counted against max_delegation_depth → invalid_request', async () => {
    const root = await ccToken(frontend);
    const delegated = await exchange(specialist, { subject_token: root, subject_token_type: AT });
    expectOk(delegated);
    // By access tokens the orchestrator (max_delegation_depth 1) may not take a second hop…
    await expectRefusal(ts, orchestrator.id, () => exchange(orchestrator, { subject_token: delegated.body.access_token, subject_token_type: AT }),
      { error: 'invalid_request', why: /delegation depth 2 exceeds the limit of 1/ });
    // …nor through a Txn-Token: the Txn-Token carries the chain, and a replacement adds the replacing workload.
    const txn = await txnFrom(specialist, delegated.body.access_token, AT);
    expectOk(txn);
    const txnToken = txn.body.access_token as string;
    expect(decodeJwt(txnToken)).toMatchObject({ sub: frontend.id, req_wl: specialist.id, act: { sub: specialist.id } });
    await expectRefusal(ts, orchestrator.id, () => txnFrom(orchestrator, txnToken, TXN),
      { error: 'invalid_request', why: /delegation depth 2 exceeds the limit of 1/ });
    // A Txn-Token the specialist requested for the frontend's own token: the specialist is the chain too.
    const direct = await txnFrom(specialist, root, AT);
    expectOk(direct);
    expect(decodeJwt(direct.body.access_token).act).toEqual({ sub: specialist.id });
    await expectRefusal(ts, orchestrator.id, () => txnFrom(orchestrator, direct.body.access_token, TXN),
      { error: 'invalid_request', why: /delegation depth 2 exceeds the limit of 1/ });
    // Control: a workload allowed three hops replaces it, and the chain and the record keep every workload.
    const replaced = await txnFrom(deepOrchestrator, txnToken, TXN);
    expectOk(replaced);
    const claims = decodeJwt(replaced.body.access_token);
    expect(claims).toMatchObject({ sub: frontend.id, req_wl: deepOrchestrator.id, act: { sub: deepOrchestrator.id, act: { sub: specialist.id } } });
    const record = await ts.admin('GET', `/admin/tokens/${claims.jti}/lineage`);
    expect(record.body.token.actor).toEqual({ sub: deepOrchestrator.id, act: { sub: specialist.id } });
    // The same workload replacing again does not repeat itself.
    const again = await txnFrom(deepOrchestrator, replaced.body.access_token, TXN);
    expectOk(again);
    expect(decodeJwt(again.body.access_token).act).toEqual(claims.act);
  });

  it('never issues a Txn-Token, a replacement or anything exchanged from them past the original subject\'s exp', async () => {
    const root = await ccToken(frontend);
    const rootExp = decodeJwt(root).exp!;
    const step = 120;
    ts.clock.advance(step);
    try {
      const txn = await txnFrom(specialist, root, AT);
      expectOk(txn);
      const t1 = decodeJwt(txn.body.access_token);
      expect(t1.exp).toBe(rootExp);
      expect(txn.body.expires_in).toBe(rootExp - t1.iat!);
      ts.clock.advance(step);
      const replaced = await txnFrom(deepOrchestrator, txn.body.access_token, TXN);
      expectOk(replaced);
      const t2 = decodeJwt(replaced.body.access_token);
      expect(t2.exp).toBe(rootExp);
      expect(replaced.body.expires_in).toBe(rootExp - t2.iat!);
      // Past the original's exp nothing is left to replace.
      ts.clock.advance(rootExp - t2.iat! + 1);
      await expectRefusal(ts, deepOrchestrator.id, () => txnFrom(deepOrchestrator, replaced.body.access_token, TXN),
        { error: 'invalid_grant', why: /expired/ });
    } finally {
      ts.clock.offset = 0;
    }
  });

  it('refuses a Txn-Token request without scope, first or replacement → invalid_request', async () => {
    const root = await ccToken(frontend);
    const noScope = { subject_token: root, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN };
    await expectRefusal(ts, specialist.id, () => exchange(specialist, noScope), { error: 'invalid_request', why: /missing required parameter scope/ });
    await expectRefusal(ts, specialist.id, () => exchange(specialist, { ...noScope, scope: '' }), { error: 'invalid_request', why: /missing required parameter scope/ });
    const txn = await txnFrom(specialist, root, AT);
    expectOk(txn);
    await expectRefusal(ts, specialist.id, () => exchange(specialist, { ...noScope, subject_token: txn.body.access_token, subject_token_type: TXN }),
      { error: 'invalid_request', why: /missing required parameter scope/ });
    expectOk(await txnFrom(specialist, txn.body.access_token, TXN));
  });
});
