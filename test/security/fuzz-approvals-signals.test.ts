/**
 * Fuzzing the human-approval and Shared Signals endpoints, as test/security/fuzz.test.ts does the others:
 * FUZZ_RUNS generated and mutated requests per endpoint group (CIBA backchannel requests and polls, the
 * approver API, the approval page, the workflows and approvers admin API, SSF discovery, stream management
 * and the poll endpoint). Every response: no 5xx, an error body `{"error": string}` (the approval page
 * may answer HTML), no stack trace or secret. Afterwards every issued decision has its token record and
 * every approval and stream row is whole.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeJwt } from 'jose';
import { ADMIN_TOKEN, agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { backchannel, CIBA, registerApprover, type Approver } from '../support/approvals.js';
import {
  closeClient, commonProblems, CONCURRENCY, fuzzGroup, CONTENT_TYPES, enc, encodeForm, extraHeaders, formEncoding, FUZZ_RUNS, FUZZ_SEED, fuzzString, fuzzStringOrHuge,
  headerSafe, jsonBody, leaks, mutatedToken, mutateFields, send, toJson, type Fields, type FuzzRequest, type FuzzResponse, type TargetResult,
} from './fuzz-support.js';

const API = 'https://orders.fuzz.example';
const TIMEOUT = Math.max(120_000, FUZZ_RUNS * 60);
const SSF_EVENTS = ['session-revoked', 'credential-change', 'token-claims-change'].map((e) => `https://schemas.openid.net/secevent/caep/event-type/${e}`);
const CIBA_PARAMS = ['scope', 'login_hint', 'binding_message', 'workflow_id', 'workflow_step', 'workflow_version', 'txn', 'resource', 'requested_expiry', 'login_hint_token', 'id_token_hint', 'acr_values', 'user_code', 'client_notification_token', 'request', 'client_id', 'client_secret'];

describe('fuzzing the human-approval and Shared Signals endpoints', () => {
  let ts: TestServer;
  const secrets = new Set<string>([ADMIN_TOKEN]);
  let reader: SecretAgent;
  let payer: SecretAgent;
  let receiver: SecretAgent;
  let other: SecretAgent;
  let alice: Approver;
  let ssfToken: string;
  let otherSsfToken: string;
  const txns: string[] = [];
  const authReqIds: string[] = [];
  const approvalIds: string[] = [];
  const streamIds: string[] = [];
  const results: [string, TargetResult][] = [];

  const check = (req: FuzzRequest, res: FuzzResponse) => commonProblems(req, res, secrets, { oauth: req.path === '/token' || req.path === '/backchannel' });
  /** The approval page is for browsers: its refusals may be HTML; still never a 5xx or a leak. */
  const pageCheck = (req: FuzzRequest, res: FuzzResponse) => {
    if (res.error || res.status === 0) return [`no response: ${res.error ?? 'status 0'}`];
    return [...(res.status >= 500 ? [`status ${res.status}`] : []), ...leaks(req, res, secrets)];
  };

  async function run(name: string, arb: fc.Arbitrary<FuzzRequest>, opts: { page?: boolean; after?: (req: FuzzRequest, res: FuzzResponse) => void; expectSuccess?: boolean } = {}) {
    results.push([name, await fuzzGroup(ts, name, arb, { ...opts, check: opts.page ? pageCheck : check })]);
  }


  beforeAll(async () => {
    console.log(`fuzz seed ${FUZZ_SEED} (FUZZ_SEED=${FUZZ_SEED} replays it), ${FUZZ_RUNS} requests per endpoint group, ${CONCURRENCY} in flight`);
    // Long polls end quickly: a generated poll without returnImmediately would otherwise hold a request for 20 s.
    // The fuzzer is one source sending thousands of refused requests: unthrottled, so each reaches its handler.
    ts = await startTestServer({ LOG_LEVEL: 'warn', APPROVAL_POLL_INTERVAL: '1', SSF_POLL_MAX_WAIT_MS: '100', ANONYMOUS_REFUSAL_BURST: '0' });
    reader = await registerSecretAgent(ts, { id: agentId('fuzz-reader'), scopes: ['orders:read'], audiences: [API] });
    payer = await registerSecretAgent(ts, { id: agentId('fuzz-payer'), grant_types: ['client_credentials', CIBA, TOKEN_EXCHANGE], scopes: ['payments:write', 'orders:read'], audiences: [API] });
    receiver = await registerSecretAgent(ts, { id: agentId('fuzz-receiver'), scopes: ['ssf.manage'], audiences: [ts.issuer] });
    other = await registerSecretAgent(ts, { id: agentId('fuzz-other-receiver'), scopes: ['ssf.manage'], audiences: [ts.issuer] });
    for (const s of [reader, payer, receiver, other]) secrets.add(s.secret);
    alice = await registerApprover(ts, 'alice@fuzz.example');
    secrets.add(alice.credential);
    expect((await ts.admin('POST', '/admin/workflows', {
      id: 'refund', version: 1, steps: [
        { id: 'fetch', agent: reader.id, tool: 'orders.read', scopes: ['orders:read'] },
        { id: 'pay', agent: payer.id, tool: 'payments.refund', scopes: ['payments:write'], depends_on: ['fetch'], approval: true },
      ],
    })).status).toBe(201);
    for (let i = 0; i < 6; i++) {
      const t = await reader.token({ grant_type: 'client_credentials', workflow_id: 'refund', workflow_step: 'fetch', resource: API });
      expect(t.status, JSON.stringify(t.body)).toBe(200);
      txns.push(decodeJwt(t.body.access_token).txn as string);
    }
    for (const txn of txns.slice(0, 3)) {
      const started = await backchannel(ts, payer, { scope: 'openid payments:write', login_hint: alice.id, binding_message: `Refund for ${txn.slice(0, 8)}`, workflow_id: 'refund', workflow_step: 'pay', txn, resource: API });
      expect(started.status, JSON.stringify(started.body)).toBe(200);
      authReqIds.push(started.body.auth_req_id);
    }
    const pending = await fetch(`${ts.url}/approvals`, { headers: { authorization: `Bearer ${alice.credential}` } });
    approvalIds.push(...((await pending.json()) as { approvals: { id: string }[] }).approvals.map((x) => x.id));
    const ssf = async (agent: SecretAgent) => {
      const res = await agent.token({ grant_type: 'client_credentials', resource: ts.issuer, scope: 'ssf.manage' });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return res.body.access_token as string;
    };
    ssfToken = await ssf(receiver);
    otherSsfToken = await ssf(other);
    for (const delivery of [{ method: 'urn:ietf:rfc:8936' }, { method: 'urn:ietf:rfc:8936' }]) {
      const res = await fetch(`${ts.url}/ssf/streams`, { method: 'POST', headers: { authorization: `Bearer ${ssfToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ delivery, events_requested: SSF_EVENTS }) });
      expect(res.status).toBe(201);
      streamIds.push(((await res.json()) as { stream_id: string }).stream_id);
    }
  });

  afterAll(async () => {
    closeClient();
    await ts?.close();
  });

  const bearerAuth = (good: string[], weight = 12): fc.Arbitrary<[string, string][]> => fc.oneof(
    { arbitrary: fc.constantFrom(...good).map((t) => [['authorization', `Bearer ${t}`]] as [string, string][]), weight },
    { arbitrary: fc.oneof(fc.constantFrom(...good).chain((t) => mutatedToken(t)).map((t) => `Bearer ${t}`), fc.constantFrom('Bearer', '', 'Basic x', `Bearer ${ADMIN_TOKEN}`), fuzzString).map((v) => [['authorization', headerSafe(v)]] as [string, string][]), weight: 2 },
    { arbitrary: fc.constant([] as [string, string][]), weight: 1 },
  );
  const contentType = fc.oneof({ arbitrary: fc.constant('application/json'), weight: 14 }, { arbitrary: fc.constantFrom(...CONTENT_TYPES, ''), weight: 1 });
  const json = (label: string, method: string, path: fc.Arbitrary<string>, auth: fc.Arbitrary<[string, string][]>, body: fc.Arbitrary<string> | null): fc.Arbitrary<FuzzRequest> =>
    fc.tuple(path, auth, body ?? fc.constant(undefined), contentType, extraHeaders).map(([p, a, b, ct, extra]) => ({
      label, method, path: p, headers: [...a, ...(b !== undefined && ct ? [['content-type', ct]] as [string, string][] : []), ...extra], ...(b !== undefined ? { body: b } : {}),
    }));
  const id = (known: string[]) => fc.oneof(
    { arbitrary: fc.constantFrom(...known).map(enc), weight: 6 },
    { arbitrary: fuzzString.map(enc), weight: 2 },
    { arbitrary: fc.constantFrom('%', '%zz', '%00', '..', '%2F', 'a%2Fb', `${'%41'.repeat(2000)}`), weight: 1 },
  );
  const form = (label: string, path: string, base: Fields, keys: readonly string[], auth: fc.Arbitrary<[string, string][]>): fc.Arbitrary<FuzzRequest> => fc.tuple(
    mutateFields(fc.constant(base), keys), formEncoding, fc.oneof({ arbitrary: fc.constant('application/x-www-form-urlencoded'), weight: 14 }, { arbitrary: fc.constantFrom(...CONTENT_TYPES, ''), weight: 1 }),
    auth, fc.integer({ min: 0, max: 19 }), extraHeaders,
  ).map(([fields, encoding, ct, a, shape, extra]) => ({
    label, method: 'POST', path, headers: [...(ct ? [['content-type', ct]] as [string, string][] : []), ...a, ...extra],
    body: shape === 0 ? toJson(Object.fromEntries(fields)) : encodeForm(fields, encoding), latin1: shape === 1,
  }));
  const basicAuth = (agents: SecretAgent[]) => fc.oneof(
    { arbitrary: fc.constantFrom(...agents).map((ag) => [['authorization', ag.auth.authorization]] as [string, string][]), weight: 10 },
    { arbitrary: fc.oneof(fc.tuple(fuzzString, fuzzString).map(([u, p]) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`), fc.constantFrom('Basic', 'Basic Og==', `Bearer ${alice.credential}`)).map((v) => [['authorization', headerSafe(v)]] as [string, string][]), weight: 2 },
    { arbitrary: fc.constant([] as [string, string][]), weight: 1 },
  );

  it('POST /backchannel (CIBA)', { timeout: TIMEOUT }, async () => {
    const arb = fc.constantFrom(...txns).chain((txn) => form('backchannel', '/backchannel', [
      ['scope', 'openid payments:write'], ['login_hint', alice.id], ['binding_message', 'Refund order 1'], ['workflow_id', 'refund'], ['workflow_step', 'pay'], ['txn', txn], ['resource', API],
    ], CIBA_PARAMS, basicAuth([payer, payer, reader])));
    await run('POST /backchannel', arb, {
      after: (_req, res) => {
        if (res.status === 200) authReqIds.push((JSON.parse(res.body) as { auth_req_id: string }).auth_req_id);
      },
    });
  });

  it('approver API', { timeout: TIMEOUT }, async () => {
    const refreshed = await fetch(`${ts.url}/approvals?status=pending`, { headers: { authorization: `Bearer ${alice.credential}` } });
    approvalIds.push(...((await refreshed.json()) as { approvals: { id: string }[] }).approvals.map((x) => x.id));
    const auth = bearerAuth([alice.credential, alice.credential, ADMIN_TOKEN]);
    const arb = fc.oneof(
      { arbitrary: json('approvals.list', 'GET', fc.constantFrom('', '?status=pending', '?status=approved', '?status=%00', '?status=x&status=y', `?limit=${'9'.repeat(40)}`).map((q) => `/approvals${q}`), auth, null), weight: 2 },
      { arbitrary: json('approvals.get', 'GET', id(approvalIds).map((x) => `/approvals/${x}`), auth, null), weight: 2 },
      {
        arbitrary: fc.tuple(id(approvalIds), fc.constantFrom('approve', 'deny')).chain(([x, action]) => json(`approvals.${action}`, 'POST', fc.constant(`/approvals/${x}/${action}`), auth,
          fc.oneof(jsonBody(fc.record({ reason: fuzzStringOrHuge }, { requiredKeys: [] }), ['reason', 'decided_by', 'status']), fc.constant('')))),
        weight: 3,
      },
    );
    await run('approver API', arb);
  });

  it('POST /token, CIBA polls', { timeout: TIMEOUT }, async () => {
    const arb = form('ciba.poll', '/token', [['grant_type', CIBA], ['auth_req_id', authReqIds[0]!]], ['grant_type', 'auth_req_id', 'scope', 'resource', 'client_id'], basicAuth([payer, payer, reader]))
      .chain((req) => fc.constantFrom(...authReqIds).map((rid) => ({ ...req, body: req.body?.replace(encodeURIComponent(authReqIds[0]!), encodeURIComponent(rid)).replace(authReqIds[0]!, rid) })));
    await run('POST /token (CIBA)', arb, { expectSuccess: false });
  });

  it('approval page', { timeout: TIMEOUT }, async () => {
    const origin = fc.oneof({ arbitrary: fc.constant(ts.url), weight: 8 }, { arbitrary: fc.constantFrom('', 'null', 'https://evil.example', ts.url.replace('127.0.0.1', 'localhost')), weight: 2 }, { arbitrary: fuzzString.map(headerSafe), weight: 1 });
    const cookie = fc.oneof({ arbitrary: fc.constant(null), weight: 4 }, { arbitrary: fuzzString.map((v) => `agent_sts_approval=${headerSafe(v)}`), weight: 1 }, { arbitrary: fuzzStringOrHuge.map(headerSafe), weight: 1 });
    const pagePost = (label: string, path: fc.Arbitrary<string>, base: Fields, keys: string[]) => fc.tuple(path, origin, cookie).chain(([p, o, c]) =>
      form(label, p, base, keys, fc.constant([['origin', o] as [string, string], ...(c !== null ? [['cookie', c] as [string, string]] : [])])));
    const arb = fc.oneof(
      { arbitrary: fc.tuple(cookie, fc.constantFrom('', '?x=1', '?id=%00')).map(([c, q]): FuzzRequest => ({ label: 'page.get', method: 'GET', path: `/approve${q}`, headers: c !== null ? [['cookie', c]] : [] })), weight: 2 },
      { arbitrary: pagePost('page.login', fc.constant('/approve/login'), [['credential', alice.credential]], ['credential', 'approver', 'csrf', 'form_token']), weight: 3 },
      { arbitrary: pagePost('page.logout', fc.constant('/approve/logout'), [['form_token', 'x']], ['form_token', 'csrf']), weight: 1 },
      { arbitrary: pagePost('page.decide', id(approvalIds).map((x) => `/approve/${x}`), [['decision', 'approve'], ['form_token', 'x']], ['decision', 'action', 'form_token', 'reason']), weight: 3 },
    );
    await run('approval page', arb, { page: true });
  });

  it('/admin/workflows and /admin/approvers', { timeout: TIMEOUT }, async () => {
    const adminAuth = bearerAuth([ADMIN_TOKEN]);
    const step = fc.record({
      id: fc.constantFrom('a', 'b', 'c', 'pay'), agent: fc.constantFrom(reader.id, payer.id, 'spiffe://elsewhere/x'), tool: fc.constantFrom('t', 'orders.read'),
      scopes: fc.subarray(['orders:read', 'payments:write']), depends_on: fc.subarray(['a', 'b', 'c']), approval: fc.boolean(), repeatable: fc.boolean(),
    }, { requiredKeys: ['id'] });
    const definition = fc.record({ id: fc.stringMatching(/^[a-z][a-z0-9-]{0,12}$/), version: fc.integer({ min: 0, max: 4 }), steps: fc.array(step, { maxLength: 4 }), description: fuzzString });
    const arb = fc.oneof(
      { arbitrary: json('workflows.create', 'POST', fc.constant('/admin/workflows'), adminAuth, jsonBody(definition as fc.Arbitrary<Record<string, unknown>>, ['id', 'version', 'steps', 'description', 'agent_checksums'])), weight: 4 },
      { arbitrary: json('workflows.get', 'GET', fc.tuple(id(['refund']), fc.constantFrom('', '?version=1', '?version=x', '?version=-1')).map(([x, q]) => `/admin/workflows/${x}${q}`), adminAuth, null), weight: 2 },
      { arbitrary: json('workflows.run', 'GET', fc.tuple(id(['refund']), id(txns)).map(([x, t]) => `/admin/workflows/${x}/runs/${t}`), adminAuth, null), weight: 2 },
      { arbitrary: json('workflows.list', 'GET', fc.constantFrom('', '?limit=1', '?limit=x', '?after=%00').map((q) => `/admin/workflows${q}`), adminAuth, null), weight: 1 },
      { arbitrary: json('approvers.create', 'POST', fc.constant('/admin/approvers'), adminAuth, jsonBody(fc.record({ id: fc.oneof(fuzzString, fc.stringMatching(/^[a-z]{1,8}@fuzz\.example$/)), name: fuzzString }, { requiredKeys: ['id'] }), ['id', 'name', 'credential'])), weight: 2 },
      { arbitrary: json('approvers.get', 'GET', id([alice.id]).map((x) => `/admin/approvers/${x}`), adminAuth, null), weight: 1 },
      { arbitrary: json('approvers.list', 'GET', fc.constant('/admin/approvers'), adminAuth, null), weight: 1 },
    );
    await run('/admin/workflows, /admin/approvers', arb, {
      after: (_req, res) => {
        if (res.status === 201) {
          const credential = (JSON.parse(res.body) as { credential?: unknown }).credential;
          if (typeof credential === 'string') secrets.add(credential);
        }
      },
    });
  });

  it('Shared Signals: discovery, stream management, poll', { timeout: TIMEOUT }, async () => {
    const auth = bearerAuth([ssfToken, ssfToken, ssfToken, otherSsfToken]);
    const streamQuery = fc.oneof(id(streamIds).map((x) => `?stream_id=${x}`), fc.constant(''));
    const delivery = fc.oneof(
      fc.record({ method: fc.constant('urn:ietf:rfc:8936') }),
      fc.record({ method: fc.constant('urn:ietf:rfc:8935'), endpoint_url: fc.constantFrom('http://127.0.0.1:9/ssf', 'https://example.invalid/ssf', 'http://169.254.169.254/latest', 'file:///etc/passwd', 'not a url'), authorization_header: fc.constantFrom('Bearer x', '') }),
    );
    const streamBody = fc.record({ delivery, events_requested: fc.subarray([...SSF_EVENTS, 'urn:example:unknown']), description: fuzzString, stream_id: fc.constantFrom(...streamIds) }, { requiredKeys: [] });
    const subject = fc.oneof(
      fc.constant({ format: 'uri', uri: reader.id }), fc.record({ format: fc.constant('jwt_id'), iss: fc.constant(ts.issuer), jti: fuzzString }), fc.record({ format: fuzzString }), fc.constant({ format: 'opaque', id: 'x' }),
    );
    const arb = fc.oneof(
      { arbitrary: json('ssf.configuration', 'GET', fc.constantFrom('/.well-known/ssf-configuration', '/.well-known/ssf-configuration?x=1'), fc.constant([]), null), weight: 1 },
      { arbitrary: json('ssf.create', 'POST', fc.constant('/ssf/streams'), auth, jsonBody(streamBody as fc.Arbitrary<Record<string, unknown>>, ['delivery', 'events_requested', 'description', 'stream_id', 'iss', 'aud', 'events_delivered'])), weight: 2 },
      { arbitrary: json('ssf.read', 'GET', streamQuery.map((q) => `/ssf/streams${q}`), auth, null), weight: 2 },
      {
        arbitrary: fc.constantFrom('PATCH', 'PUT').chain((method) => json(`ssf.${method.toLowerCase()}`, method, fc.constant('/ssf/streams'), auth,
          jsonBody(streamBody.map((b) => ({ stream_id: streamIds[0], ...b })) as fc.Arbitrary<Record<string, unknown>>, ['stream_id', 'delivery', 'events_requested', 'description']))),
        weight: 2,
      },
      { arbitrary: json('ssf.status', 'GET', streamQuery.map((q) => `/ssf/status${q}`), auth, null), weight: 1 },
      { arbitrary: json('ssf.status.update', 'POST', fc.constant('/ssf/status'), auth, jsonBody(fc.record({ stream_id: fc.constantFrom(...streamIds), status: fc.constantFrom('enabled', 'paused', 'disabled', 'x'), reason: fuzzString }, { requiredKeys: [] }), ['stream_id', 'status', 'reason'])), weight: 2 },
      {
        arbitrary: fc.constantFrom('add', 'remove').chain((op) => json(`ssf.subjects.${op}`, 'POST', fc.constant(`/ssf/subjects/${op}`), auth,
          jsonBody(fc.record({ stream_id: fc.constantFrom(...streamIds), subject, verified: fc.boolean() }, { requiredKeys: [] }) as fc.Arbitrary<Record<string, unknown>>, ['stream_id', 'subject', 'verified']))),
        weight: 2,
      },
      { arbitrary: json('ssf.verify', 'POST', fc.constant('/ssf/verify'), auth, jsonBody(fc.record({ stream_id: fc.constantFrom(...streamIds), state: fuzzString }, { requiredKeys: [] }), ['stream_id', 'state'])), weight: 1 },
      {
        arbitrary: json('ssf.poll', 'POST', id(streamIds).map((x) => `/ssf/poll/${x}`), auth, jsonBody(fc.record({
          maxEvents: fc.oneof(fc.integer({ min: -2, max: 20 }), fc.constant(1e300)), returnImmediately: fc.constant(true), ack: fc.array(fuzzString, { maxLength: 3 }),
          setErrs: fc.dictionary(fuzzString, fc.record({ err: fuzzString, description: fuzzString }), { maxKeys: 2 }),
        }, { requiredKeys: ['returnImmediately'] }), ['maxEvents', 'returnImmediately', 'ack', 'setErrs'])),
        weight: 3,
      },
      { arbitrary: json('ssf.delete', 'DELETE', streamQuery.map((q) => `/ssf/streams${q}`), fc.constant([['authorization', `Bearer ${otherSsfToken}`]] as [string, string][]), null), weight: 1 },
    );
    await run('Shared Signals API', arb);
  });

  it('left whole records behind and still serves', { timeout: 120_000 }, async () => {
    const knex = ts.server.db.knex;
    const issuedWithoutRecord = await knex('decision_events as e').leftJoin('issued_tokens as t', 't.jti', 'e.jti')
      .where('e.decision', 'issued').whereNull('t.jti').select('e.id', 'e.action', 'e.jti');
    expect(issuedWithoutRecord).toEqual([]);
    const recordWithoutIssued = await knex('issued_tokens as t')
      .whereNotExists(knex('decision_events as e').whereRaw('e.jti = t.jti').andWhere('e.decision', 'issued')).select('t.jti', 't.type');
    expect(recordWithoutIssued).toEqual([]);
    // An approved approval that gave a token names a recorded token.
    const approvalsWithLostToken = await knex('approvals as a').whereNotNull('a.token_jti')
      .whereNotExists(knex('issued_tokens as t').whereRaw('t.jti = a.token_jti')).select('a.id');
    expect(approvalsWithLostToken).toEqual([]);
    const errors = ts.logs.filter((l) => /"level":(50|60)/.test(l));
    expect(errors.map((l) => l.slice(0, 500))).toEqual([]);
    expect((await send(ts.url, { label: 'ready', method: 'GET', path: '/readyz', headers: [] })).status).toBe(200);
    expect((await reader.token({ grant_type: 'client_credentials' })).status).toBe(200);
    console.log(`fuzz: ${results.reduce((n, [, r]) => n + r.sent, 0)} requests in all`);
  });
});
