/**
 * Fuzzing every endpoint with generated and mutated requests (fast-check). Each endpoint group gets
 * FUZZ_RUNS requests (1,000 by default, 100,000 with `npm run fuzz`), 8 in flight over keep-alive: valid
 * requests with fields removed, duplicated, renamed or replaced by generated values (strings of any code
 * point, control characters, huge strings, numbers JSON can't hold, objects, arrays, deep nesting),
 * malformed form and JSON bodies, wrong content types, mutated tokens (bit flips, truncation, swapped
 * segments, `alg: none`, rewritten headers and claims) and headers (Authorization, DPoP,
 * Workload-Identity-Token, Workload-Proof-Token), JWTs with generated claims signed by keys the server
 * trusts. Every response: no 5xx, an error body `{"error": string}`, no stack trace, source path,
 * database error text, secret or private key. Afterwards the records must be whole: every `issued`
 * decision has its token record and every token record its decision, every agent is well-formed, and
 * refused registrations left nothing behind.
 *
 * FUZZ_SEED replays a run's generated requests (the server's keys and tokens are new each run, so
 * mutations apply to fresh tokens the same way).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ADMIN_TOKEN, agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { basic } from '../support/oauth-client.js';
import { AT, JWT, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';
import { parseWorkloadId } from '../../src/identity/workload-id.js';
import {
  closeClient, commonProblems, CONCURRENCY, fuzzGroup, CONTENT_TYPES, enc, encodeForm, extraHeaders, formEncoding, FUZZ_RUNS, FUZZ_SEED, fuzzJson, fuzzKey,
  fuzzString, fuzzStringOrHuge, headerSafe, jsonBody, mostlyKept, mutatedObject, mutatedToken, mutateFields, placeholder, send, sha256,
  signJwt, sometimesWellFormed, toJson, tokenMutation, mutateToken, type Fields, type FuzzKey, type FuzzRequest, type FuzzResponse, type SignSpec, type TargetResult,
} from './fuzz-support.js';

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const IDP = 'https://idp.fuzz.example';
const PARTNER = 'https://as.partner.fuzz.example';
const API = 'https://api.fuzz.example';
const API2 = 'https://other.fuzz.example';
const SCOPES = ['read', 'write', 'tools:search'];

// Placeholder slots of JWTs signed at send time.
const SLOT_CLIENT = 0; // client assertion or WPT
const SLOT_DPOP = 1;
const SLOT_GRANT = 2; // jwt-bearer assertion, subject token, attestation JWT

/** Per endpoint group, long enough for `npm run fuzz` (100,000 requests each). */
const TIMEOUT = Math.max(120_000, FUZZ_RUNS * 60);

const FORM_PARAMS = [
  'grant_type', 'scope', 'resource', 'audience', 'client_id', 'client_secret', 'client_assertion', 'client_assertion_type', 'subject_token',
  'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'request_context', 'request_details', 'assertion', 'token',
  'token_type_hint', 'code', 'redirect_uri', 'refresh_token', 'username', 'password', 'dpop_jkt',
];

describe('fuzzing every endpoint', () => {
  let ts: TestServer;
  const secrets = new Set<string>([ADMIN_TOKEN]);
  const keys: Record<'idp' | 'partner' | 'stranger' | 'pk' | 'wit' | 'dpop', FuzzKey> = {
    idp: fuzzKey('ES256', 'idp-1'),
    partner: fuzzKey('EdDSA', 'partner-1'),
    stranger: fuzzKey('ES256', 'stranger-1'),
    pk: fuzzKey('ES256', 'agent-pk-1'),
    wit: fuzzKey('EdDSA', 'agent-wit-1'),
    dpop: fuzzKey('ES256', 'dpop-1'),
  };
  let a: SecretAgent; // client_secret_basic, every grant type
  let p: SecretAgent; // client_secret_post
  let d: SecretAgent; // DPoP-bound
  const K = agentId('fuzz-pkjwt');
  const W = agentId('fuzz-wit');
  let wit: string;
  const tokens: Record<string, string> = {};
  /** Tokens the revocation endpoints may revoke without touching the ones other groups exchange. */
  const revocable: string[] = [];
  const adminRevocable: string[] = [];
  const victims: string[] = [];
  const createdAgents = new Set<string>();
  const refusedAgentIds = new Set<string>();
  const results: [string, TargetResult][] = [];

  // RFC 6749 §5.2 errors of the token endpoint (and POST /wit) carry Cache-Control: no-store.
  const oauthCheck = (req: FuzzRequest, res: FuzzResponse) => commonProblems(req, res, secrets, { oauth: req.path === '/token' || req.path === '/wit' });
  const check = (req: FuzzRequest, res: FuzzResponse) => commonProblems(req, res, secrets);

  async function run(name: string, arb: fc.Arbitrary<FuzzRequest>, opts: { runs?: number; oauth?: boolean; after?: (req: FuzzRequest, res: FuzzResponse) => void; expectSuccess?: boolean } = {}) {
    results.push([name, await fuzzGroup(ts, name, arb, { ...opts, check: opts.oauth ? oauthCheck : check })]);
  }


  beforeAll(async () => {
    console.log(`fuzz seed ${FUZZ_SEED} (FUZZ_SEED=${FUZZ_SEED} replays it), ${FUZZ_RUNS} requests per endpoint group, ${CONCURRENCY} in flight`);
    for (const k of Object.values(keys)) secrets.add(k.d);
    ts = await startTestServer({
      LOG_LEVEL: 'warn',
      // The fuzzer is one source sending thousands of refused requests: unthrottled, so each reaches its handler.
      ANONYMOUS_REFUSAL_BURST: '0',
      TRUSTED_ISSUERS: JSON.stringify([{ issuer: IDP, jwks: { keys: [keys.idp.jwk] }, audience: 'agent-sts' }]),
      PARTNER_DOMAINS: JSON.stringify([{
        issuer: PARTNER, jwks: { keys: [keys.partner.jwk] }, subject_map: { 'user:alice': `spiffe://${TRUST_DOMAIN}/users/alice` },
        subject_prefixes: [{ from: 'spiffe://partner.fuzz.example/', to: `spiffe://${TRUST_DOMAIN}/partners/p/` }],
      }]),
    });
    for (const row of await ts.server.db.knex('signing_keys').select('private_jwk')) {
      const dValue = (JSON.parse(row.private_jwk as string) as { d?: string }).d;
      if (dValue) secrets.add(dValue);
    }
    a = await registerSecretAgent(ts, {
      id: agentId('fuzz-a'), grant_types: ['client_credentials', TOKEN_EXCHANGE, JWT_BEARER], scopes: SCOPES, audiences: [API, API2],
      max_delegation_depth: 5, token_exchange: { may_act_for_others: true, subject_issuers: [IDP] },
    });
    p = await registerSecretAgent(ts, {
      id: agentId('fuzz-post'), token_endpoint_auth_method: 'client_secret_post', grant_types: ['client_credentials', TOKEN_EXCHANGE],
      scopes: ['read'], audiences: [API], token_exchange: { may_act_for_others: true },
    });
    d = await registerSecretAgent(ts, { id: agentId('fuzz-dpop'), dpop_bound_access_tokens: true, scopes: ['read'], audiences: [API] });
    for (const s of [a, p, d]) secrets.add(s.secret);
    expect((await ts.admin('POST', '/admin/agents', { id: K, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.pk.jwk] }, scopes: ['read'], audiences: [API] })).status).toBe(201);
    expect((await ts.admin('POST', '/admin/agents', {
      id: W, token_endpoint_auth_method: 'wit', grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['read'], audiences: [API],
      attestors: [{ type: 'join_token' }, { type: 'wit' }, { type: 'jwt', issuer: IDP, claims: { sub: 'ci:fuzz' } }], token_exchange: { may_act_for_others: true },
    })).status).toBe(201);
    const jt = await ts.admin('POST', `/admin/agents/${enc(W)}/join-tokens`);
    const witRes = await fetch(`${ts.url}/wit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ agent_id: W, jwk: keys.wit.jwk, attestation: { type: 'join_token', token: jt.body.join_token } }) });
    wit = ((await witRes.json()) as { wit: string }).wit;
    expect(wit).toEqual(expect.any(String));

    const cc = async (agent: SecretAgent, form: Record<string, string> = {}) => {
      const res = await agent.token({ grant_type: 'client_credentials', ...form });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return res.body.access_token as string;
    };
    tokens.atA = await cc(a);
    tokens.atP = await cc(p);
    const ex = await a.token({ grant_type: TOKEN_EXCHANGE, subject_token: tokens.atA, subject_token_type: AT, scope: 'read', resource: API2 });
    expect(ex.status, JSON.stringify(ex.body)).toBe(200);
    tokens.exchanged = ex.body.access_token;
    const txn = await a.token({ grant_type: TOKEN_EXCHANGE, subject_token: tokens.atA, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'read' });
    expect(txn.status, JSON.stringify(txn.body)).toBe(200);
    tokens.txn = txn.body.access_token;
    tokens.wit = wit;
    const now = Math.floor(Date.now() / 1000);
    tokens.idToken = signJwt(keys.idp, { typ: 'JWT' }, { iss: IDP, sub: 'user:alice', aud: 'agent-sts', iat: now, exp: now + 3600 });
    tokens.foreign = signJwt(keys.stranger, { typ: 'at+jwt' }, { iss: ts.issuer, sub: a.id, client_id: a.id, aud: API, jti: 'forged', iat: now, exp: now + 3600 });
    for (let i = 0; i < 4; i++) revocable.push(await cc(a), await cc(p));
    for (let i = 0; i < 4; i++) adminRevocable.push(await cc(a));
    for (const [i, body] of [
      { scopes: ['read'], audiences: [API] },
      { scopes: ['read', 'write'], audiences: [API, API2], grant_types: ['client_credentials', TOKEN_EXCHANGE] },
      { token_endpoint_auth_method: 'client_secret_post' },
      { token_endpoint_auth_method: 'wit', attestors: [{ type: 'join_token' }] },
      { token_endpoint_auth_method: 'wit', attestors: [{ type: 'join_token' }, { type: 'wit' }] },
      { token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.pk.jwk] } },
    ].entries()) {
      const id = agentId(`victim-${i}`);
      const res = await ts.admin('POST', '/admin/agents', { id, ...body });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      if (res.body.client_secret) secrets.add(res.body.client_secret);
      victims.push(id);
    }
  });

  afterAll(async () => {
    closeClient();
    await ts?.close();
  });

  // -------------------------------------------------------------------------------------------------
  // Shared generators

  /** A form POST to `path`: fields mutated, body sometimes malformed, content type sometimes wrong. */
  function formRequest(label: string, path: string, parts: fc.Arbitrary<{ fields: Fields; headers: [string, string][]; signed: SignSpec[] }>): fc.Arbitrary<FuzzRequest> {
    return parts.chain((x) => fc.tuple(
      mutateFields(fc.constant(x.fields), FORM_PARAMS), formEncoding,
      fc.oneof({ arbitrary: fc.constant('application/x-www-form-urlencoded'), weight: 14 }, { arbitrary: fc.constantFrom(...CONTENT_TYPES, ''), weight: 1 }),
      fc.integer({ min: 0, max: 19 }), extraHeaders,
    ).map(([fields, encoding, contentType, shape, extra]): FuzzRequest => ({
      // Now and then the same fields as JSON, or sent as latin-1 bytes.
      label, method: 'POST', path,
      headers: [...(contentType ? [['content-type', contentType] as [string, string]] : []), ...x.headers, ...extra],
      body: shape === 0 ? toJson(Object.fromEntries(fields)) : encodeForm(fields, encoding),
      latin1: shape === 1, signed: x.signed,
    })));
  }

  /** How the request authenticates at the token, introspection and revocation endpoints. */
  function clientAuth(path: string, opts: { basic?: SecretAgent[] } = {}): fc.Arbitrary<{ fields: Fields; headers: [string, string][]; signed: SignSpec[] }> {
    const url = `${ts.issuer}${path}`;
    const basicAgents = opts.basic ?? [a];
    const dpopProof: fc.Arbitrary<SignSpec> = fc.tuple(
      mutatedObject({ typ: 'dpop+jwt', jwk: keys.dpop.jwk }, ['typ', 'jwk', 'alg', 'kid', 'crit']),
      mutatedObject({ htm: 'POST', htu: url, iat: '$now', jti: '$fresh' }, ['htm', 'htu', 'iat', 'jti', 'ath', 'nonce']),
      mostlyKept(),
    ).map(([header, claims, mutation]) => ({ slot: SLOT_DPOP, key: keys.dpop, header, claims, mutation }));
    const noParts = { fields: [] as Fields, headers: [] as [string, string][], signed: [] as SignSpec[] };
    return fc.oneof(
      { arbitrary: fc.constantFrom(...basicAgents).map(basicAuthOf), weight: 8 },
      { arbitrary: fc.constant({ ...noParts, fields: [['client_id', p.id], ['client_secret', p.secret]] as Fields }), weight: 2 },
      {
        // private_key_jwt with a generated or mutated assertion signed by the agent's key.
        arbitrary: fc.tuple(
          mutatedObject({ typ: 'JWT' }, ['typ', 'alg', 'kid', 'crit', 'jwk']),
          mutatedObject({ iss: K, sub: K, aud: `${ts.issuer}/token`, exp: '$now+60', iat: '$now', jti: '$fresh' }, ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti']),
          mostlyKept(), fc.boolean(),
        ).map(([header, claims, mutation, withId]) => ({
          fields: [...(withId ? [['client_id', K]] as Fields : []), ['client_assertion_type', CLIENT_ASSERTION_TYPE], ['client_assertion', placeholder(SLOT_CLIENT)]] as Fields,
          headers: [], signed: [{ slot: SLOT_CLIENT, key: keys.pk, header, claims, mutation }],
        })),
        weight: 2,
      },
      {
        // A DPoP-bound agent with a proof (generated or mutated).
        arbitrary: dpopProof.map((proof) => ({ fields: [], headers: [['authorization', d.auth.authorization], ['dpop', placeholder(SLOT_DPOP)]] as [string, string][], signed: [proof] })),
        weight: 2,
      },
      {
        // WIT + WPT, either mutated.
        arbitrary: fc.tuple(
          mutatedToken(wit),
          mutatedObject({ typ: 'wpt+jwt' }, ['typ', 'alg', 'kid']),
          mutatedObject({ aud: url, exp: '$now+60', iat: '$now', jti: '$fresh', wth: sha256(wit) }, ['aud', 'exp', 'iat', 'jti', 'wth', 'ath', 'tth', 'oth']),
          mostlyKept(), fc.boolean(),
        ).map(([witValue, header, claims, mutation, withId]) => ({
          fields: withId ? [['client_id', W]] as Fields : [],
          headers: [['workload-identity-token', headerSafe(witValue)], ['workload-proof-token', placeholder(SLOT_CLIENT)]] as [string, string][],
          signed: [{ slot: SLOT_CLIENT, key: keys.wit, header, claims, mutation }],
        })),
        weight: 2,
      },
      {
        // Broken credentials of every shape.
        arbitrary: fc.oneof(
          fc.tuple(fuzzString, fuzzString).map(([u, pw]) => `Basic ${Buffer.from(`${u}:${pw}`).toString('base64')}`),
          mutatedToken(a.auth.authorization.slice(6)).map((b) => `Basic ${b}`),
          fc.constantFrom('Basic', 'Basic ', 'Basic ===', 'Basic Og==', `Basic ${Buffer.from(':').toString('base64')}`, `Basic ${Buffer.from('a:b:c').toString('base64')}`, `Bearer ${ADMIN_TOKEN.slice(0, 4)}`, 'DPoP x', 'basic  x'),
          fc.tuple(fc.constantFrom('Basic ', 'Bearer ', 'DPoP ', 'WIT ', ''), fuzzStringOrHuge).map(([s, v]) => s + v),
        ).chain((value) => fc.tuple(fc.constant(value), fc.boolean(), fc.option(mutatedToken(wit)))).map(([value, twice, witHeader]) => ({
          ...noParts,
          headers: [
            ['authorization', headerSafe(value)], ...(twice ? [['authorization', a.auth.authorization]] as [string, string][] : []),
            ...(witHeader !== null ? [['workload-identity-token', headerSafe(witHeader)]] as [string, string][] : []),
          ] as [string, string][],
        })),
        weight: 3,
      },
      { arbitrary: fc.constant(noParts), weight: 1 },
      // A DPoP proof next to any credentials.
      { arbitrary: dpopProof.map((proof) => ({ fields: [], headers: [['authorization', a.auth.authorization], ['dpop', placeholder(SLOT_DPOP)]] as [string, string][], signed: [proof] })), weight: 1 },
    );
  }

  const basicAuthOf = (agent: SecretAgent) => ({ fields: [] as Fields, headers: [['authorization', agent.auth.authorization]] as [string, string][], signed: [] as SignSpec[] });
  const combine = (auth: { fields: Fields; headers: [string, string][]; signed: SignSpec[] }, fields: Fields, signed: SignSpec[] = []) => ({
    fields: [...fields, ...auth.fields], headers: auth.headers, signed: [...auth.signed, ...signed],
  });

  const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { freq: 3 });
  const rarely = <T>(arb: fc.Arbitrary<T>) => fc.oneof({ arbitrary: fc.constant(null), weight: 3 }, { arbitrary: arb, weight: 1 });
  const field = (name: string, value: string | null): Fields => (value === null ? [] : [[name, value]]);
  const knownToken = () => fc.constantFrom(...Object.values(tokens));

  // -------------------------------------------------------------------------------------------------

  it('POST /token, client_credentials', { timeout: TIMEOUT }, async () => {
    const arb = fc.tuple(
      clientAuth('/token', { basic: [a, p, d] }),
      optional(fc.constantFrom('read', 'read write', 'tools:search', 'write read read', '', 'admin', 'openid')),
      optional(fc.constantFrom(API, API2, 'https://evil.example', `${API}/`, 'urn:x')),
      optional(fc.constantFrom(API, 'https://evil.example')),
    ).map(([auth, scope, resource, audience]) => combine(auth, [['grant_type', 'client_credentials'], ...field('scope', scope), ...field('resource', resource), ...field('audience', audience)]));
    await run('POST /token client_credentials', formRequest('client_credentials', '/token', arb), { oauth: true });
  });

  it('POST /token, token exchange', { timeout: TIMEOUT }, async () => {
    const types = [AT, TXN, JWT, ID_TOKEN];
    // A subject token from the trusted identity provider with generated claims.
    const idpSubject: fc.Arbitrary<SignSpec> = fc.tuple(
      mutatedObject({ typ: 'JWT' }, ['typ', 'alg', 'kid', 'crit']),
      mutatedObject({ iss: IDP, sub: 'user:alice', aud: 'agent-sts', iat: '$now', exp: '$now+600', scope: 'read' }, ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'scope', 'scp', 'may_act', 'act', 'jti', 'txn', 'tctx', 'rctx']),
      mostlyKept(), fc.boolean(),
    ).map(([header, claims, mutation, stranger]) => ({ slot: SLOT_GRANT, key: stranger ? keys.stranger : keys.idp, header, claims, mutation }));
    const typeOf: Record<string, string> = { [tokens.txn!]: TXN, [tokens.idToken!]: ID_TOKEN };
    const subject = fc.oneof(
      { arbitrary: fc.tuple(knownToken(), mostlyKept()).map(([t, m]) => ({ token: mutateToken(t, m), type: typeOf[t] ?? AT, signed: [] as SignSpec[] })), weight: 4 },
      { arbitrary: idpSubject.map((s) => ({ token: placeholder(SLOT_GRANT), type: ID_TOKEN, signed: [s] })), weight: 2 },
      { arbitrary: fuzzStringOrHuge.map((t) => ({ token: t, type: AT, signed: [] as SignSpec[] })), weight: 1 },
    );
    const context = fc.oneof(
      fc.constant('{"tool":"search","query":"open orders"}'),
      fuzzJson.map(toJson),
      fuzzJson.map((v) => Buffer.from(toJson(v)).toString('base64url')),
      fuzzStringOrHuge,
    );
    const arb = fc.tuple(
      clientAuth('/token', { basic: [a, a, p] }), subject, fc.option(fc.constantFrom(...types), { freq: 3 }),
      fc.option(fc.tuple(knownToken().chain((t) => mutatedToken(t)), fc.constantFrom(AT, JWT, TXN, 'urn:x')), { freq: 4 }),
      rarely(fc.constantFrom(AT, TXN, JWT, ID_TOKEN, 'urn:agent-sts:params:oauth:token-type:biscuit')),
      rarely(fc.constantFrom(TRUST_DOMAIN, API, API2, PARTNER, 'https://evil.example')),
      rarely(fc.constantFrom(API, API2, PARTNER)),
      optional(fc.constantFrom('read', 'read', 'read write', 'tools:search', 'write', '')),
      rarely(context), rarely(context),
    ).map(([auth, subj, subjectType, actor, requested, audience, resource, scope, details, ctxParam]) => combine(auth, [
      ['grant_type', TOKEN_EXCHANGE], ['subject_token', subj.token], ['subject_token_type', subjectType ?? subj.type],
      ...(actor ? [['actor_token', actor[0]], ['actor_token_type', actor[1]]] as Fields : []),
      ...field('requested_token_type', requested), ...field('audience', audience), ...field('resource', resource), ...field('scope', scope),
      ...field('request_details', details), ...field('request_context', ctxParam),
    ], subj.signed));
    const wellFormed = fc.constantFrom(AT, TXN).map((requested) => combine(basicAuthOf(a), [
      ['grant_type', TOKEN_EXCHANGE], ['subject_token', tokens.atA!], ['subject_token_type', AT], ['scope', 'read'],
      ...(requested === TXN ? [['requested_token_type', TXN], ['audience', TRUST_DOMAIN]] as Fields : [['resource', API2]] as Fields),
    ]));
    await run('POST /token token-exchange', formRequest('token-exchange', '/token', sometimesWellFormed(arb, wellFormed)), { oauth: true });
  });

  it('POST /token, jwt-bearer', { timeout: TIMEOUT }, async () => {
    const assertion: fc.Arbitrary<SignSpec> = fc.tuple(
      mutatedObject({ typ: 'JWT' }, ['typ', 'alg', 'kid', 'crit']),
      fc.tuple(fc.constantFrom('user:alice', 'spiffe://partner.fuzz.example/agents/x', 'user:mallory'), fc.constantFrom(ts.issuer, `${ts.issuer}/token`)).chain(([sub, aud]) => mutatedObject(
        { iss: PARTNER, sub, aud, jti: '$fresh', iat: '$now', exp: '$now+60', scope: 'read' },
        ['iss', 'sub', 'aud', 'jti', 'iat', 'exp', 'nbf', 'scope'],
      )),
      mostlyKept(), fc.constantFrom('partner', 'partner', 'partner', 'idp', 'stranger'),
    ).map(([header, claims, mutation, which]) => ({ slot: SLOT_GRANT, key: keys[which as 'partner' | 'idp' | 'stranger'], header, claims, mutation }));
    const arb = fc.tuple(
      clientAuth('/token'), assertion,
      optional(fc.constantFrom('read', 'read write', '')), optional(fc.constantFrom(API, API2, 'https://evil.example')), optional(fc.constantFrom(API, 'urn:x')),
    ).map(([auth, grant, scope, resource, audience]) => combine(auth, [
      ['grant_type', JWT_BEARER], ['assertion', placeholder(SLOT_GRANT)], ...field('scope', scope), ...field('resource', resource), ...field('audience', audience),
    ], [grant]));
    const wellFormed = fc.constant(combine(basicAuthOf(a), [['grant_type', JWT_BEARER], ['assertion', placeholder(SLOT_GRANT)], ['scope', 'read']], [{
      slot: SLOT_GRANT, key: keys.partner, header: { typ: 'JWT' }, mutation: { op: 'keep' },
      claims: { iss: PARTNER, sub: 'user:alice', aud: ts.issuer, jti: '$fresh', iat: '$now', exp: '$now+60', scope: 'read' },
    }]));
    await run('POST /token jwt-bearer', formRequest('jwt-bearer', '/token', sometimesWellFormed(arb, wellFormed)), { oauth: true });
  });

  it('POST /token, any grant type', { timeout: TIMEOUT }, async () => {
    const arb = fc.tuple(clientAuth('/token'), fc.oneof(fc.constantFrom('authorization_code', 'refresh_token', 'password', 'implicit', 'urn:ietf:params:oauth:grant-type:device_code', 'urn:openid:params:grant-type:ciba', ''), fuzzStringOrHuge))
      .map(([auth, grantType]) => combine(auth, [['grant_type', grantType], ['code', 'x'], ['refresh_token', 'x'], ['redirect_uri', 'https://evil.example/cb']]));
    await run('POST /token other grant types', formRequest('grant-types', '/token', arb), { oauth: true, runs: Math.ceil(FUZZ_RUNS / 4), expectSuccess: false });
  });

  it('POST /token/introspection', { timeout: TIMEOUT }, async () => {
    const arb = fc.tuple(
      clientAuth('/token/introspection', { basic: [a, p, d] }),
      fc.oneof({ arbitrary: knownToken().chain((t) => mutatedToken(t)), weight: 4 }, { arbitrary: fuzzStringOrHuge, weight: 1 }),
      optional(fc.oneof(fc.constantFrom('access_token', 'refresh_token', 'urn:ietf:params:oauth:token-type:txn_token'), fuzzString)),
    ).map(([auth, token, hint]) => combine(auth, [['token', token], ...field('token_type_hint', hint)]));
    await run('POST /token/introspection', formRequest('introspection', '/token/introspection', arb), { oauth: true });
  });

  it('POST /token/revocation', { timeout: TIMEOUT }, async () => {
    const arb = fc.tuple(
      clientAuth('/token/revocation', { basic: [a, p] }),
      fc.oneof(
        { arbitrary: fc.constantFrom(...revocable), weight: 2 },
        // Fixtures only ever mutated here, so later groups still hold live tokens.
        { arbitrary: knownToken().chain((t) => tokenMutation.map((m) => mutateToken(t, m)).filter((m) => m !== t)), weight: 3 },
        { arbitrary: fuzzStringOrHuge, weight: 1 },
      ),
      optional(fc.oneof(fc.constantFrom('access_token', 'refresh_token'), fuzzString)),
    ).map(([auth, token, hint]) => combine(auth, [['token', token], ...field('token_type_hint', hint)]));
    await run('POST /token/revocation', formRequest('revocation', '/token/revocation', arb), { oauth: true });
  });

  it('POST /wit', { timeout: TIMEOUT }, async () => {
    const witEndpoint = `${ts.issuer}/wit`;
    const agentKeys = [fuzzKey('EdDSA', 'renewal-1'), fuzzKey('ES256', 'renewal-2')];
    for (const k of agentKeys) secrets.add(k.d);
    const attestation = fc.oneof(
      {
        arbitrary: fc.tuple(
          mutatedObject({ typ: 'JWT' }, ['typ', 'alg', 'kid']),
          mutatedObject({ iss: IDP, sub: 'ci:fuzz', aud: 'agent-sts', iat: '$now', exp: '$now+300' }, ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti']),
          mostlyKept(), fc.boolean(),
        ).map(([header, claims, mutation, stranger]) => ({
          attestation: { type: 'jwt', token: placeholder(SLOT_GRANT) } as Record<string, unknown>, headers: [] as [string, string][],
          signed: [{ slot: SLOT_GRANT, key: stranger ? keys.stranger : keys.idp, header, claims, mutation }],
        })),
        weight: 3,
      },
      {
        arbitrary: fc.tuple(
          mutatedToken(wit), mutatedObject({ typ: 'wpt+jwt' }, ['typ', 'alg']),
          mutatedObject({ aud: witEndpoint, exp: '$now+60', iat: '$now', jti: '$fresh', wth: sha256(wit) }, ['aud', 'exp', 'jti', 'wth', 'ath', 'tth']),
          mostlyKept(),
        ).map(([witValue, header, claims, mutation]) => ({
          attestation: { type: 'wit' } as Record<string, unknown>,
          headers: [['workload-identity-token', headerSafe(witValue)], ['workload-proof-token', placeholder(SLOT_CLIENT)]] as [string, string][],
          signed: [{ slot: SLOT_CLIENT, key: keys.wit, header, claims, mutation }],
        })),
        weight: 3,
      },
      { arbitrary: fuzzString.map((t) => ({ attestation: { type: 'join_token', token: t } as Record<string, unknown>, headers: [] as [string, string][], signed: [] as SignSpec[] })), weight: 1 },
    );
    const arb = fc.tuple(
      attestation, fc.constantFrom(...agentKeys), fc.constantFrom(W, W, W, a.id, victims[3]!, agentId('nobody')),
      fc.option(fc.constantFrom('x'.repeat(43), 'A'.repeat(43)), { freq: 8 }),
    ).chain(([att, key, agentIdValue, checksum]) => fc.tuple(
      jsonBody(fc.constant({ agent_id: agentIdValue, jwk: key.jwk, attestation: att.attestation, ...(checksum ? { agent_checksum: checksum } : {}) }), ['agent_id', 'jwk', 'attestation', 'agent_checksum', 'type', 'token']),
      fc.oneof({ arbitrary: fc.constant('application/json'), weight: 14 }, { arbitrary: fc.constantFrom(...CONTENT_TYPES, ''), weight: 1 }),
      extraHeaders,
    ).map(([body, contentType, extra]): FuzzRequest => ({
      label: 'wit', method: 'POST', path: '/wit', body, signed: att.signed,
      headers: [...(contentType ? [['content-type', contentType]] as [string, string][] : []), ...att.headers, ...extra],
    })));
    // Few generated attestations survive every mutation (about 1 in 300), so some seeds have none succeed; that a
    // valid attestation succeeds is shown where the suite gets its WIT.
    await run('POST /wit', arb, { oauth: true, expectSuccess: false });
  });

  it('discovery, JWKS and health', { timeout: TIMEOUT }, async () => {
    const arb = fc.tuple(
      fc.constantFrom('/.well-known/oauth-authorization-server', '/.well-known/openid-configuration', '/jwks', '/healthz', '/readyz'),
      fc.oneof({ arbitrary: fc.constant('GET'), weight: 8 }, { arbitrary: fc.constantFrom('HEAD', 'OPTIONS', 'POST', 'PUT', 'DELETE', 'PATCH'), weight: 2 }),
      fc.option(fc.array(fc.tuple(fuzzString, fuzzString), { maxLength: 4 }).map((q) => new URLSearchParams(q).toString())),
      extraHeaders, fc.option(fuzzStringOrHuge, { freq: 4 }), fc.option(fc.constantFrom('application/json', 'application/x-www-form-urlencoded', 'text/plain'), { freq: 2 }),
    ).map(([path, method, query, extra, body, contentType]): FuzzRequest => ({
      label: 'discovery', method, path: query ? `${path}?${query}` : path,
      headers: [...extra, ...(body !== null && contentType ? [['content-type', contentType]] as [string, string][] : [])],
      ...(body !== null && method !== 'GET' && method !== 'HEAD' ? { body } : {}),
    }));
    await run('discovery, /jwks, /healthz, /readyz', arb);
  });

  // -------------------------------------------------------------------------------------------------
  // Admin API

  const adminAuth: fc.Arbitrary<[string, string][]> = fc.oneof(
    { arbitrary: fc.constant([['authorization', `Bearer ${ADMIN_TOKEN}`]] as [string, string][]), weight: 12 },
    {
      arbitrary: fc.oneof(
        mutatedToken(ADMIN_TOKEN).map((t) => `Bearer ${t}`),
        fc.constantFrom(`bearer ${ADMIN_TOKEN}`, `Bearer  ${ADMIN_TOKEN}`, `Bearer ${ADMIN_TOKEN} `, `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`, 'Bearer', ''),
        fuzzString,
      ).map((v) => [['authorization', headerSafe(v)]] as [string, string][]),
      weight: 1,
    },
    { arbitrary: fc.constant([] as [string, string][]), weight: 1 },
  );

  /** An id in a path: a known one, a generated one, or raw path text (malformed escapes, dot segments, slashes). */
  const pathId = (known: string[]) => fc.oneof(
    { arbitrary: fc.constantFrom(...known).map(enc), weight: 6 },
    { arbitrary: fuzzString.map(enc), weight: 3 },
    { arbitrary: fc.constantFrom(...known).chain((id) => mutatedToken(id)).map(enc), weight: 1 },
    { arbitrary: fc.constantFrom('%', '%zz', '%E0%A4%A', '%C0%AF', '%00', '%2F', '..', '.', '%2e%2e', 'a%2Fb', '%252F', 'a/b', '', ' '.replace(' ', '%20'), '%F0%9F%98', `${'%41'.repeat(3000)}`), weight: 2 },
  );

  const query = (base: Fields, keys: readonly string[]) => mutateFields(fc.constant(base), keys).map((q) => (q.length ? `?${new URLSearchParams(q)}` : ''));

  const adminJson = (path: string, method: string, body: fc.Arbitrary<string>, label: string): fc.Arbitrary<FuzzRequest> => fc.tuple(
    adminAuth, body, fc.oneof({ arbitrary: fc.constant('application/json'), weight: 14 }, { arbitrary: fc.constantFrom(...CONTENT_TYPES, ''), weight: 1 }), extraHeaders,
  ).map(([auth, b, contentType, extra]) => ({
    label, method, path, body: b, headers: [...auth, ...(contentType ? [['content-type', contentType]] as [string, string][] : []), ...extra],
  }));

  const AGENT_FIELDS = ['id', 'token_endpoint_auth_method', 'scopes', 'audiences', 'jwks', 'grant_types', 'dpop_bound_access_tokens', 'max_delegation_depth', 'agent_checksums', 'attestors', 'token_exchange', 'client_secret', 'status'];

  const newAgentBody = fc.record({
    id: fc.stringMatching(/^[A-Za-z0-9._-]{1,24}$/).map((s) => `spiffe://${TRUST_DOMAIN}/fuzz/${s}`),
    token_endpoint_auth_method: fc.constantFrom('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'wit'),
    scopes: fc.subarray(SCOPES),
    audiences: fc.subarray([API, API2, 'urn:fuzz', `spiffe://${TRUST_DOMAIN}/svc`]),
    jwks: fc.constantFrom({ keys: [keys.pk.jwk] }, { keys: [keys.wit.jwk, keys.dpop.jwk] }),
    grant_types: fc.subarray(['client_credentials', TOKEN_EXCHANGE, JWT_BEARER], { minLength: 1 }),
    dpop_bound_access_tokens: fc.boolean(),
    max_delegation_depth: fc.integer({ min: 0, max: 5 }),
    agent_checksums: fc.subarray(['x'.repeat(43), 'A'.repeat(43)]),
    attestors: fc.subarray([{ type: 'join_token' }, { type: 'wit' }, { type: 'jwt', issuer: IDP, claims: { sub: 'ci:x' } }]),
    token_exchange: fc.record({ may_act_for_others: fc.boolean(), subject_issuers: fc.subarray([IDP]), subject_token_types: fc.subarray([AT, TXN, JWT, ID_TOKEN]) }, { requiredKeys: [] }),
  }, { requiredKeys: ['id'] });

  const changesBody = fc.record({
    scopes: fc.subarray(SCOPES), audiences: fc.subarray([API, API2]), grant_types: fc.subarray(['client_credentials', TOKEN_EXCHANGE], { minLength: 1 }),
    dpop_bound_access_tokens: fc.boolean(), max_delegation_depth: fc.integer({ min: 0, max: 5 }), agent_checksums: fc.subarray(['x'.repeat(43)]),
    jwks: fc.constantFrom({ keys: [keys.pk.jwk] }, null), attestors: fc.subarray([{ type: 'join_token' }, { type: 'wit' }]),
    token_exchange: fc.record({ may_act_for_others: fc.boolean() }, { requiredKeys: [] }),
  }, { requiredKeys: [] });

  it('/admin/agents', { timeout: TIMEOUT }, async () => {
    const readable = [a.id, p.id, d.id, K, W, ...victims];
    const arb = fc.oneof(
      { arbitrary: adminJson('/admin/agents', 'POST', jsonBody(newAgentBody as fc.Arbitrary<Record<string, unknown>>, AGENT_FIELDS), 'agents.create'), weight: 6 },
      { arbitrary: fc.tuple(pathId(victims), fc.constant(0)).chain(([id]) => adminJson(`/admin/agents/${id}`, 'PATCH', jsonBody(changesBody as fc.Arbitrary<Record<string, unknown>>, AGENT_FIELDS), 'agents.update')), weight: 4 },
      { arbitrary: fc.tuple(adminAuth, query([['status', 'active'], ['limit', '10'], ['after', victims[0]!]], ['status', 'limit', 'after', 'next', 'offset'])).map(([auth, q]): FuzzRequest => ({ label: 'agents.list', method: 'GET', path: `/admin/agents${q}`, headers: auth })), weight: 3 },
      { arbitrary: fc.tuple(adminAuth, pathId(readable), fc.constantFrom('GET', 'GET', 'HEAD', 'PUT', 'OPTIONS')).map(([auth, id, method]): FuzzRequest => ({ label: 'agents.get', method, path: `/admin/agents/${id}`, headers: auth })), weight: 3 },
      { arbitrary: fc.tuple(adminAuth, pathId(victims)).map(([auth, id]): FuzzRequest => ({ label: 'agents.secret', method: 'POST', path: `/admin/agents/${id}/secret`, headers: auth })), weight: 1 },
      {
        arbitrary: fc.tuple(pathId(victims), fc.boolean()).chain(([id, withBody]) => (withBody
          ? adminJson(`/admin/agents/${id}/join-tokens`, 'POST', jsonBody(fc.constant({ ttl: 60 }), ['ttl']), 'agents.join-token')
          : adminAuth.map((auth): FuzzRequest => ({ label: 'agents.join-token', method: 'POST', path: `/admin/agents/${id}/join-tokens`, headers: auth })))),
        weight: 2,
      },
      { arbitrary: fc.tuple(adminAuth, pathId(victims)).map(([auth, id]): FuzzRequest => ({ label: 'agents.disable', method: 'DELETE', path: `/admin/agents/${id}`, headers: auth })), weight: 1 },
    );
    await run('/admin/agents', arb, {
      after: (req, res) => {
        let body: Record<string, unknown> | undefined;
        try {
          body = JSON.parse(res.body) as Record<string, unknown>;
        } catch { /* not JSON */ }
        for (const k of ['client_secret', 'join_token']) if (typeof body?.[k] === 'string') secrets.add(body[k] as string);
        if (req.label !== 'agents.create') return;
        if (res.status === 201) createdAgents.add((body?.agent as { id: string }).id);
        else {
          try {
            const sent = JSON.parse(req.body ?? '') as { id?: unknown };
            if (typeof sent?.id === 'string') refusedAgentIds.add(sent.id);
          } catch { /* not JSON */ }
        }
      },
    });
  });

  it('/admin/tokens, /admin/events, /admin/keys', { timeout: TIMEOUT }, async () => {
    const jtis = (await ts.admin('GET', '/admin/tokens?limit=50')).body.tokens.map((t: { jti: string }) => t.jti) as string[];
    const revocableJtis = adminRevocable.map((t) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()).jti as string);
    const TOKEN_QUERY = ['sub', 'client_id', 'txn', 'jti', 'type', 'limit', 'after'];
    const arb = fc.oneof(
      { arbitrary: fc.tuple(adminAuth, query([['client_id', a.id], ['type', 'access_token'], ['limit', '5'], ['after', `1.${jtis[0]}`], ['sub', a.id]], TOKEN_QUERY)).map(([auth, q]): FuzzRequest => ({ label: 'tokens.list', method: 'GET', path: `/admin/tokens${q}`, headers: auth })), weight: 4 },
      { arbitrary: fc.tuple(adminAuth, pathId(jtis), fc.constantFrom('', '/lineage')).map(([auth, jti, sub]): FuzzRequest => ({ label: 'tokens.get', method: 'GET', path: `/admin/tokens/${jti}${sub}`, headers: auth })), weight: 4 },
      { arbitrary: fc.tuple(adminAuth, pathId(revocableJtis)).map(([auth, jti]): FuzzRequest => ({ label: 'tokens.revoke', method: 'POST', path: `/admin/tokens/${jti}/revoke`, headers: auth })), weight: 1 },
      { arbitrary: fc.tuple(adminAuth, query([['client_id', a.id], ['decision', 'refused'], ['before', '100'], ['limit', '5']], ['client_id', 'decision', 'before', 'limit', 'after'])).map(([auth, q]): FuzzRequest => ({ label: 'events.list', method: 'GET', path: `/admin/events${q}`, headers: auth })), weight: 3 },
      { arbitrary: fc.tuple(adminAuth, query([], ['limit', 'kid'])).map(([auth, q]): FuzzRequest => ({ label: 'keys.list', method: 'GET', path: `/admin/keys${q}`, headers: auth })), weight: 1 },
    );
    await run('/admin/tokens, /admin/events, /admin/keys', arb);
  });

  it('POST /admin/keys/rotate', { timeout: TIMEOUT }, async () => {
    // Every accepted call creates two signing keys and a new provider, and retired keys stay published
    // while their tokens live: a few calls, whatever FUZZ_RUNS says.
    const arb = fc.tuple(adminAuth, fc.option(fuzzStringOrHuge), fc.option(fc.constantFrom(...CONTENT_TYPES)), query([], ['delay', 'alg'])).map(([auth, body, contentType, q]): FuzzRequest => ({
      label: 'keys.rotate', method: 'POST', path: `/admin/keys/rotate${q}`, headers: [...auth, ...(contentType ? [['content-type', contentType]] as [string, string][] : [])],
      ...(body !== null ? { body } : {}),
    }));
    await run('POST /admin/keys/rotate', arb, { runs: Math.min(FUZZ_RUNS, 2 * CONCURRENCY), expectSuccess: false });
  });

  it('unknown paths and methods', { timeout: TIMEOUT }, async () => {
    const known = ['/token', '/token/introspection', '/token/revocation', '/wit', '/jwks', '/healthz', '/readyz', '/.well-known/oauth-authorization-server', '/.well-known/openid-configuration', '/admin', '/admin/agents', '/admin/keys', '/admin/keys/rotate', '/admin/tokens', '/admin/events'];
    const segment = fc.oneof(fuzzString.map(enc), fc.constantFrom('..', '.', '', '%2e%2e', '%2F', '%00', '%', '%zz', 'auth', 'authorize', 'userinfo', 'session', 'reg', 'device', 'request', 'backchannel', 'par', 'jwks.json', 'token', 'admin', '.well-known', 'openid-configuration', 'me', 'interaction', 'end_session', 'introspection', 'revocation', 'rotate', 'agents', 'lineage', 'revoke'));
    const path = fc.oneof(
      { arbitrary: fc.array(segment, { minLength: 1, maxLength: 6 }).map((s) => `/${s.join('/')}`), weight: 4 },
      { arbitrary: fc.tuple(fc.constantFrom(...known), fc.constantFrom('', '/', '//', '/x', '.json', '%20', '?', '#x', ';x', '/..', '/%2e%2e/admin')).map(([k, s]) => k + s), weight: 3 },
      { arbitrary: fc.constantFrom(...known).map((k) => `/${k}`), weight: 1 },
      { arbitrary: fc.constantFrom('/', '*', '/%', `/${'a'.repeat(8000)}`, `/${'a/'.repeat(2000)}`, '/\u00e9'.replace('\u00e9', '%C3%A9')), weight: 1 },
    );
    const arb = fc.tuple(
      path, fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'PURGE', 'SEARCH', 'LOCK', 'MKCOL', 'COPY', 'MOVE', 'REPORT'),
      fc.oneof(adminAuth, clientAuth('/token').map((x) => x.headers)), fc.option(fuzzStringOrHuge, { freq: 3 }), fc.option(fc.constantFrom(...CONTENT_TYPES), { freq: 2 }), extraHeaders,
    ).map(([pathValue, method, auth, body, contentType, extra]): FuzzRequest => ({
      label: 'unknown', method, path: pathValue,
      headers: [...auth.filter(([, v]) => !v.includes('ZZSIGNED')), ...(contentType ? [['content-type', contentType]] as [string, string][] : []), ...extra],
      ...(body !== null && method !== 'GET' && method !== 'HEAD' ? { body } : {}),
    }));
    await run('unknown paths and methods', arb, { expectSuccess: false });
  });

  // -------------------------------------------------------------------------------------------------
  // Never a partial write

  it('left whole records behind: every issued decision has its token record and every agent is well-formed', { timeout: 120_000 }, async () => {
    const knex = ts.server.db.knex;
    const issuedWithoutRecord = await knex('decision_events as e').leftJoin('issued_tokens as t', 't.jti', 'e.jti')
      .where('e.decision', 'issued').whereNull('t.jti').select('e.id', 'e.action', 'e.jti');
    expect(issuedWithoutRecord).toEqual([]);
    const recordWithoutIssued = await knex('issued_tokens as t')
      .whereNotExists(knex('decision_events as e').whereRaw('e.jti = t.jti').andWhere('e.decision', 'issued'))
      .select('t.jti', 't.type', 't.client_id');
    expect(recordWithoutIssued).toEqual([]);
    const orphans = await knex('issued_tokens as t').whereNotNull('t.parent_jti')
      .whereNotExists(knex('issued_tokens as p').whereRaw('p.jti = t.parent_jti')).select('t.jti', 't.parent_jti');
    expect(orphans).toEqual([]);

    const records = await knex('issued_tokens').select('*');
    expect(records.length).toBeGreaterThan(0);
    for (const r of records) {
      const audience = typeof r.audience === 'string' ? JSON.parse(r.audience) : r.audience;
      const ok = typeof r.jti === 'string' && r.jti.length > 0 && ['access_token', 'txn_token', 'wit', 'jwt_grant', 'jwt', 'biscuit'].includes(r.type)
        && typeof r.sub === 'string' && typeof r.client_id === 'string' && /^[A-Za-z0-9_-]{43}$/.test(r.token_hash)
        && Number(r.exp) >= Number(r.iat) && Array.isArray(audience) && audience.every((x: unknown) => typeof x === 'string')
        && (r.revoked_at === null) === (r.revoked_reason === null);
      expect(ok, `malformed token record ${JSON.stringify(r)}`).toBe(true);
    }

    // Agents: what the admin API lists is what the table holds, and every record is whole.
    const listed: Record<string, unknown>[] = [];
    for (let after: string | undefined; ;) {
      const page = await ts.admin('GET', `/admin/agents?limit=1000${after ? `&after=${enc(after)}` : ''}`);
      expect(page.status).toBe(200);
      listed.push(...page.body.agents);
      if (!page.body.next) break;
      after = page.body.next;
    }
    const rows = await knex('agents').select('*');
    expect(listed.length).toBe(rows.length);
    const hashes = new Map(rows.map((r: { id: string; client_secret_hash: string | null }) => [r.id, r.client_secret_hash]));
    const strings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
    for (const ag of listed) {
      const id = ag.id as string;
      const parsed = parseWorkloadId(id);
      const method = ag.token_endpoint_auth_method as string;
      const ok = typeof parsed !== 'string' && parsed.trustDomain === TRUST_DOMAIN
        && strings(ag.scopes) && strings(ag.audiences) && strings(ag.grant_types) && (ag.grant_types as string[]).length > 0 && strings(ag.agent_checksums)
        && ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'wit'].includes(method)
        && (['client_secret_basic', 'client_secret_post'].includes(method) ? typeof hashes.get(id) === 'string' : hashes.get(id) === null)
        && (method !== 'private_key_jwt' || Array.isArray((ag.jwks as { keys?: unknown } | null)?.keys))
        && typeof ag.dpop_bound_access_tokens === 'boolean' && Number.isInteger(ag.max_delegation_depth) && Array.isArray(ag.attestors)
        && typeof ag.token_exchange === 'object' && ag.token_exchange !== null
        && ['active', 'disabled'].includes(ag.status as string) && (ag.status === 'disabled') === (ag.disabled_at !== null)
        && !('client_secret_hash' in ag) && !('client_secret' in ag);
      expect(ok, `malformed agent ${JSON.stringify(ag)}`).toBe(true);
    }
    // Each registration committed with its audit event; refused registrations left no agent.
    const unaudited = await knex('agents as g')
      .whereNotExists(knex('decision_events as e').whereRaw('e.client_id = g.id').andWhere({ decision: 'admin', action: 'agent.register' })).select('g.id');
    expect(unaudited).toEqual([]);
    const disabledUnaudited = await knex('agents as g').where('g.status', 'disabled')
      .whereNotExists(knex('decision_events as e').whereRaw('e.client_id = g.id').andWhere({ decision: 'admin', action: 'agent.disable' })).select('g.id');
    expect(disabledUnaudited).toEqual([]);
    const ids = new Set(rows.map((r: { id: string }) => r.id));
    const fixtures = new Set([a.id, p.id, d.id, K, W, ...victims]);
    const leftBehind = [...refusedAgentIds].filter((id) => ids.has(id) && !createdAgents.has(id) && !fixtures.has(id));
    expect(leftBehind).toEqual([]);
    for (const id of createdAgents) expect(ids.has(id), id).toBe(true);
    console.log(`fuzz: ${records.length} token records, ${rows.length} agents (${createdAgents.size} registered by fuzzed requests, ${refusedAgentIds.size} ids refused)`);

    // Nothing the server logged as an unhandled error, and it still serves.
    const errors = ts.logs.filter((l) => /"level":(50|60)/.test(l));
    expect(errors.map((l) => l.slice(0, 500))).toEqual([]);
    expect((await send(ts.url, { label: 'ready', method: 'GET', path: '/readyz', headers: [] })).status).toBe(200);
    expect((await a.token({ grant_type: 'client_credentials' })).status).toBe(200);
    const total = results.reduce((n, [, r]) => n + r.sent, 0);
    console.log(`fuzz: ${total} requests in all`);
  });
});
