/**
 * The adversarial suite, token-type matrix: every subject token type this server issues, exchanged for every
 * token type it issues (access token, Txn-Token, Biscuit, JWT authorization grant, and the grant redeemed
 * with jwt-bearer), by a requester with room for more hops and by one at its limit. Whatever is issued
 * never outlives its subject and never drops a hop of the call chain; the chain never passes the
 * requester's `max_delegation_depth`, and a Biscuit's `max_depth` leaves only the hops still allowed. What
 * the rules forbid (a Txn-Token turned into anything but a Txn-Token, a chain too deep, another trust domain's
 * Txn-Token as any subject, an `act` claim that is no chain of actors) is refused with the right error;
 * everything else is a control that must be issued.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, SignJWT } from 'jose';
import { newAgentKey, TestIssuer, type AgentKey } from '../support/workload.js';
import { signAsServer } from '../support/forgery.js';
import { agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { postForm } from '../support/oauth-client.js';
import { AT, exchange, JWT, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';
import { httpOutcome, Ledger, type HttpResult } from './adversarial-support.js';
import { actors } from '../../src/policy/act-chain.js';
import type { ActClaim } from '../../src/tokens/access-token.js';

const BISCUIT = 'urn:agent-sts:params:oauth:token-type:biscuit';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const SELF_SIGNED = 'urn:ietf:params:oauth:token-type:self_signed';
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const ORCH = 'https://orchestrator.matrix.example';
const SPEC = 'https://specialist.matrix.example';
const API = 'https://api.matrix.example';
const CATEGORY = 'depth and expiry across token types';
const OAUTH = (...errors: string[]) => new RegExp(`^(${errors.join('|')}) \\((400|401)\\)$`);

/**
 * What a subject or an issued token holds that may only narrow: its expiry and its call chain, current actor first
 * (a JWT's `act`; for a Biscuit the chain its record keeps when minted, or its holders and delegates), and for a
 * Biscuit the delegations it still allows.
 */
interface Held { exp: number; chain: string[]; remaining?: number }

describe('adversarial suite: depth and expiry only narrow across subject × requested token types', () => {
  const ledger = new Ledger();
  let ts: TestServer;
  /** Another trust domain's token service, trusted here as an identity provider. */
  let tts: TestIssuer;
  let frontend: SecretAgent;
  let orch: SecretAgent;
  let spec: SecretAgent;
  let deep: SecretAgent;
  let shallow: SecretAgent;
  const limits = new Map<string, number>();
  const WORKER = agentId('worker');
  let workerKey: AgentKey;

  beforeAll(async () => {
    tts = await new TestIssuer().start();
    ts = await startTestServer({ LOG_LEVEL: 'warn', TRUSTED_ISSUERS: tts.trustedIssuersEnv() });
    // The server is its own partner domain, so the JWT authorization grants it issues can be redeemed here with jwt-bearer.
    await ts.restart({ PARTNER_DOMAINS: JSON.stringify([{ issuer: ts.issuer, jwks_uri: `${ts.issuer}/jwks`, subject_prefixes: [{ from: `spiffe://${TRUST_DOMAIN}/`, to: `spiffe://${TRUST_DOMAIN}/` }] }]) });
    const grants = ['client_credentials', TOKEN_EXCHANGE, JWT_BEARER];
    const agent = async (name: string, depth: number, audiences: string[]) => {
      const a = await registerSecretAgent(ts, {
        id: agentId(name), grant_types: grants, scopes: ['s:a', 's:b'], audiences, max_delegation_depth: depth, token_exchange: { may_act_for_others: true, subject_issuers: [tts.url] },
      });
      limits.set(a.id, depth);
      return a;
    };
    frontend = await registerSecretAgent(ts, { id: agentId('frontend'), scopes: ['s:a', 's:b'], audiences: [ORCH] });
    orch = await agent('orch', 5, [SPEC]);
    spec = await agent('spec', 5, [API, ts.issuer]);
    deep = await agent('deep', 5, [API, ts.issuer]);
    shallow = await agent('shallow', 2, [API, ts.issuer]);
    // A workload with its own key: it may present self-signed subject tokens.
    workerKey = await newAgentKey();
    expect((await ts.admin('POST', '/admin/agents', {
      id: WORKER, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ ...workerKey.jwk, kid: 'w-1' }] }, scopes: ['s:a', 's:b'],
      audiences: [API, ts.issuer], grant_types: grants, max_delegation_depth: 1, token_exchange: { may_act_for_others: true },
    })).status).toBe(201);
    limits.set(WORKER, 1);
  });
  afterAll(async () => {
    await ts?.close();
    await tts?.close();
  });

  const chainOf = (act: unknown) => actors(act as ActClaim | undefined);
  const introspect = async (token: string) => (await postForm(`${ts.url}/token/introspection`, { token }, spec.auth)).body as Record<string, unknown>;
  /** What an issued token holds, read from it (JWTs) or from introspection (Biscuits). */
  async function heldBy(type: string, token: string): Promise<Held> {
    if (type === BISCUIT) {
      const i = await introspect(token);
      expect(i.active, JSON.stringify(i)).toBe(true);
      const remaining = (i.max_depth as number) - (i.delegation_depth as number);
      if (i.delegation_depth === 0) {
        const record = await ts.admin('GET', `/admin/tokens/${encodeURIComponent(i.jti as string)}/lineage`);
        return { exp: i.exp as number, chain: chainOf(record.body.token.actor), remaining };
      }
      return { exp: i.exp as number, chain: [i.client_id as string, ...chainOf(i.act)], remaining };
    }
    const c = decodeJwt(token);
    return { exp: c.exp!, chain: chainOf(c.act) };
  }
  const isSuffix = (inner: string[], outer: string[]) => inner.length <= outer.length && inner.every((a, i) => outer[outer.length - inner.length + i] === a);

  it('walks subject type × requested type × requester: only narrowing is issued, the rest refused', async () => {
    const ok = async (res: HttpResult) => {
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return res.body.access_token as string;
    };
    const root = await ok(await frontend.token({ grant_type: 'client_credentials' }));
    const delegated = await ok(await exchange(orch, { subject_token: root, subject_token_type: AT, resource: SPEC }));
    const txn = await ok(await exchange(spec, { subject_token: delegated, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 's:a' }));
    const replaced = await ok(await exchange(deep, { subject_token: txn, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 's:a' }));
    const biscuit = await ok(await exchange(spec, { subject_token: delegated, subject_token_type: AT, requested_token_type: BISCUIT, scope: 's:a' }));
    const grant = await ok(await exchange(spec, { subject_token: delegated, subject_token_type: AT, requested_token_type: JWT, audience: ts.issuer, scope: 's:a' }));
    const subjects: { name: string; token: string; type: string; held: Held }[] = [
      { name: 'own access token', token: root, type: AT, held: await heldBy(AT, root) },
      { name: 'delegated access token', token: delegated, type: AT, held: await heldBy(AT, delegated) },
      { name: 'Txn-Token of a delegated token', token: txn, type: TXN, held: await heldBy(TXN, txn) },
      { name: 'replacement Txn-Token', token: replaced, type: TXN, held: await heldBy(TXN, replaced) },
      { name: 'Biscuit of a delegated token', token: biscuit, type: BISCUIT, held: await heldBy(BISCUIT, biscuit) },
      { name: 'JWT authorization grant', token: grant, type: JWT, held: await heldBy(JWT, grant) },
    ];
    expect(subjects[2]!.held.chain).toEqual([spec.id, orch.id]);
    expect(subjects[3]!.held.chain).toEqual([deep.id, spec.id, orch.id]);
    expect(subjects[4]!.held.chain).toEqual([spec.id, orch.id]);
    expect(subjects[4]!.held.remaining).toBe(5 - 2);

    // Each new token would outlive its subject by its own lifetime if expiry were not narrowed: move the clock on.
    ts.clock.advance(120);
    try {
      const requested = [AT, TXN, BISCUIT, JWT, JWT_BEARER];
      for (const subject of subjects) {
        for (const want of requested) {
          for (const requester of [deep, shallow]) {
            const variant = `${subject.name} → ${want} by ${requester.id.split('/').pop()}`;
            // A JWT authorization grant is redeemed once: each redemption gets a fresh one.
            if (want === JWT_BEARER && subject.type === JWT) {
              subject.token = await ok(await exchange(spec, { subject_token: delegated, subject_token_type: AT, requested_token_type: JWT, audience: ts.issuer, scope: 's:a' }));
              subject.held = await heldBy(JWT, subject.token);
            }
            const send = (): Promise<HttpResult> => {
              if (want === JWT_BEARER) return requester.token({ grant_type: JWT_BEARER, assertion: subject.token, scope: 's:a', resource: API });
              const form: Record<string, string> = { subject_token: subject.token, subject_token_type: subject.type === JWT ? AT : subject.type, requested_token_type: want, scope: 's:a' };
              if (want === TXN) form.audience = TRUST_DOMAIN;
              else if (want === JWT) form.audience = ts.issuer;
              else if (want === AT) form.resource = API;
              return exchange(requester, form);
            };
            // A Biscuit is delegated by its holder, naming the requester as the next delegate.
            const res = subject.type === BISCUIT && want !== JWT_BEARER
              ? await exchange(spec, { subject_token: subject.token, subject_token_type: BISCUIT, requested_token_type: want, actor_token: await ok(await requester.token({ grant_type: 'client_credentials' })), actor_token_type: AT, context: 'matrix' })
              : await send();
            const nextChain = [requester.id, ...subject.held.chain.filter((_, i) => i > 0 || subject.held.chain[0] !== requester.id)];
            const limit = limits.get(requester.id)!;
            // What must be refused, and how.
            let refusal: RegExp | undefined;
            if (want === JWT_BEARER) refusal = subject.type === JWT ? undefined : OAUTH('invalid_request', 'invalid_grant');
            else if (subject.type === TXN && want !== TXN) refusal = OAUTH('invalid_request');
            else if (subject.type === BISCUIT && want !== BISCUIT) refusal = OAUTH('invalid_request');
            else if (subject.type === JWT) refusal = OAUTH('invalid_grant');
            else if (subject.type === BISCUIT) refusal = subject.held.remaining! > 0 ? undefined : OAUTH('invalid_request');
            else if (nextChain.length > limit) refusal = OAUTH('invalid_request');
            if (refusal) {
              ledger.attack(CATEGORY, 'token endpoint', variant, httpOutcome(res, { oauth: true }), refusal);
              continue;
            }
            const accepted = res.status === 200;
            ledger.control(CATEGORY, variant, accepted, `${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
            if (!accepted) continue;
            const issuedType = want === JWT_BEARER ? AT : want;
            const issued = await heldBy(issuedType, res.body.access_token as string);
            const why: string[] = [];
            if (issued.exp > subject.held.exp) why.push(`exp ${issued.exp} after the subject's ${subject.held.exp}`);
            if (res.body.expires_in > subject.held.exp - Math.floor(Date.now() / 1000) - ts.clock.offset + 1) why.push(`expires_in ${res.body.expires_in} past the subject's exp`);
            if (subject.type === BISCUIT) {
              // A delegation: one more delegate in the chain, one hop less left.
              if (!isSuffix(subject.held.chain.slice(0, 1), issued.chain.slice(1))) why.push(`chain ${JSON.stringify(issued.chain)} does not extend ${JSON.stringify(subject.held.chain)}`);
              if (issued.remaining !== subject.held.remaining! - 1) why.push(`${issued.remaining} delegations left after one of ${subject.held.remaining}`);
            } else if (want === JWT_BEARER) {
              // Redeemed: the grant's chain is kept as it was (the redeeming client is not an actor), within the limit.
              if (JSON.stringify(issued.chain) !== JSON.stringify(subject.held.chain)) why.push(`chain ${JSON.stringify(issued.chain)} is not the grant's ${JSON.stringify(subject.held.chain)}`);
              if (issued.chain.length > limit) why.push(`chain of ${issued.chain.length} past the limit ${limit}`);
            } else {
              // Within the trust domain the chain only grows, never past the requester's limit; a Biscuit leaves only the hops still allowed.
              if (!isSuffix(subject.held.chain, issued.chain)) why.push(`chain ${JSON.stringify(issued.chain)} dropped hops of ${JSON.stringify(subject.held.chain)}`);
              if (issued.chain.length > limit) why.push(`chain of ${issued.chain.length} past the limit ${limit}`);
              if (issued.remaining !== undefined && issued.chain.length + issued.remaining > limit) why.push(`${issued.remaining} delegations left after a chain of ${issued.chain.length} (limit ${limit})`);
            }
            for (const w of why) ledger.failures.push(`${CATEGORY}: ${variant}: ${w}`);
          }
        }
      }
    } finally {
      ts.clock.offset = 0;
    }
    // A self-signed subject token (the worker's own JWT): only a Txn-Token, for the worker itself, never past the JWT's exp.
    const signed = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
      new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: 'w-1', ...header }).sign(workerKey.privateKey);
    const asWorker = async (form: Record<string, string>) => postForm(`${ts.url}/token`, {
      grant_type: TOKEN_EXCHANGE, client_id: WORKER, client_assertion_type: CLIENT_ASSERTION_TYPE,
      client_assertion: await signed({ iss: WORKER, sub: WORKER, aud: `${ts.issuer}/token`, jti: randomUUID(), exp: ts.clock.now() + 60 }), ...form,
    });
    for (const want of [AT, TXN, BISCUIT, JWT]) {
      const exp = ts.clock.now() + 45;
      const subject = await signed({ iss: WORKER, sub: WORKER, aud: ts.issuer, iat: ts.clock.now(), exp, jti: randomUUID() });
      const form: Record<string, string> = { subject_token: subject, subject_token_type: SELF_SIGNED, requested_token_type: want, scope: 's:a' };
      if (want === TXN) form.audience = TRUST_DOMAIN;
      else if (want === JWT) form.audience = ts.issuer;
      else if (want === AT) form.resource = API;
      const res = await asWorker(form);
      const variant = `self-signed → ${want} by worker`;
      if (want !== TXN) {
        ledger.attack(CATEGORY, 'token endpoint', variant, httpOutcome(res, { oauth: true }), OAUTH('invalid_request'));
        continue;
      }
      ledger.control(CATEGORY, variant, res.status === 200, `${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
      if (res.status !== 200) continue;
      const issued = await heldBy(TXN, res.body.access_token as string);
      if (issued.exp > exp) ledger.failures.push(`${CATEGORY}: ${variant}: exp ${issued.exp} after the JWT's ${exp}`);
      if (issued.chain.length) ledger.failures.push(`${CATEGORY}: ${variant}: a chain ${JSON.stringify(issued.chain)} for the workload's own token`);
      // Its Txn-Token, replaced by another workload, gains that hop; the worker (limit 1) cannot go deeper.
      const replaced = await exchange(deep, { subject_token: res.body.access_token, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 's:a' });
      ledger.control(CATEGORY, 'self-signed → Txn-Token → replaced by deep', replaced.status === 200, `${replaced.status} ${JSON.stringify(replaced.body).slice(0, 200)}`);
      if (replaced.status !== 200) continue;
      const again = await heldBy(TXN, replaced.body.access_token as string);
      if (again.exp > issued.exp || JSON.stringify(again.chain) !== JSON.stringify([deep.id])) ledger.failures.push(`${CATEGORY}: replaced self-signed Txn-Token: exp ${again.exp}, chain ${JSON.stringify(again.chain)}`);
      ledger.attack(CATEGORY, 'token endpoint', 'self-signed → Txn-Token → replaced by deep → replaced by worker (limit 1)',
        httpOutcome(await asWorker({ subject_token: replaced.body.access_token, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 's:a' }), { oauth: true }), OAUTH('invalid_request'));
    }
    // A JWT authorization grant carrying a chain of two, redeemed by the worker (limit 1): refused; by deep: kept.
    for (const [who, expectOk] of [['worker', false], ['deep', true]] as const) {
      const fresh = await ok(await exchange(spec, { subject_token: delegated, subject_token_type: AT, requested_token_type: JWT, audience: ts.issuer, scope: 's:a' }));
      const form = { grant_type: JWT_BEARER, assertion: fresh, scope: 's:a', resource: API };
      const res = who === 'worker'
        ? await postForm(`${ts.url}/token`, { ...form, client_id: WORKER, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: await signed({ iss: WORKER, sub: WORKER, aud: `${ts.issuer}/token`, jti: randomUUID(), exp: ts.clock.now() + 60 }) })
        : await deep.token(form);
      if (expectOk) {
        ledger.control(CATEGORY, `jwt-bearer grant of a chain of two, by ${who}`, res.status === 200, `${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        if (res.status === 200) expect(decodeJwt(res.body.access_token).act).toEqual({ sub: spec.id, act: { sub: orch.id } });
      } else {
        ledger.attack(CATEGORY, 'token endpoint', `jwt-bearer grant of a chain of two, by ${who} (limit 1)`, httpOutcome(res, { oauth: true }), OAUTH('invalid_request'));
      }
    }
    // Another trust domain's Txn-Token, from an issuer trusted for identity tokens: no subject here, as an identity
    // token or a JWT, for any requested type. The same issuer's identity token is the control.
    const wants = (want: string): Record<string, string> => (want === TXN ? { audience: TRUST_DOMAIN } : want === JWT ? { audience: ts.issuer } : want === AT ? { resource: API } : {});
    for (const type of [ID_TOKEN, JWT]) {
      for (const want of [AT, TXN, BISCUIT, JWT]) {
        const foreignTxn = await tts.sign({ sub: 'user:alice', txn: 'foreign-txn', req_wl: 'spiffe://other.example/wl', scope: 's:a', jti: randomUUID() }, { typ: 'txntoken+jwt' });
        const res = await exchange(deep, { subject_token: foreignTxn, subject_token_type: type, requested_token_type: want, scope: 's:a', ...wants(want) });
        ledger.attack(CATEGORY, 'token endpoint', `foreign Txn-Token as ${type.split(':').pop()} → ${want} by deep`, httpOutcome(res, { oauth: true }), OAUTH('invalid_request'));
      }
    }
    const idToken = await exchange(deep, { subject_token: await tts.sign({ sub: 'user:alice', scope: 's:a' }), subject_token_type: ID_TOKEN, requested_token_type: AT, scope: 's:a', resource: API });
    ledger.control(CATEGORY, 'foreign identity token → access token by deep', idToken.status === 200, `${idToken.status} ${JSON.stringify(idToken.body).slice(0, 200)}`);
    // An act claim with an entry that is no actor, or nested past MAX_DELEGATION_DEPTH + 1: refused, never read in
    // part (a chain cut short would count fewer hops), in an identity token and in a jwt-bearer assertion.
    const nested = (n: number) => Array.from({ length: n }, (_, i) => `spiffe://other.example/a${i}`)
      .reduceRight<Record<string, unknown> | undefined>((act, sub) => ({ sub, ...(act ? { act } : {}) }), undefined);
    const malformed: [string, unknown][] = [['an entry without sub', { sub: 'spiffe://other.example/a', act: { client_id: 'b' } }], ['a null entry', { sub: 'spiffe://other.example/a', act: null }], ['nested 7 deep (limit 5)', nested(7)]];
    for (const [what, act] of malformed) {
      const res = await exchange(deep, { subject_token: await tts.sign({ sub: 'user:alice', scope: 's:a', act }), subject_token_type: ID_TOKEN, requested_token_type: AT, scope: 's:a', resource: API });
      ledger.attack(CATEGORY, 'token endpoint', `identity token whose act has ${what} → access token by deep`, httpOutcome(res, { oauth: true }), OAUTH('invalid_grant'));
      const grant = await ok(await exchange(spec, { subject_token: delegated, subject_token_type: AT, requested_token_type: JWT, audience: ts.issuer, scope: 's:a' }));
      const forged = await signAsServer(ts, { ...decodeJwt(grant), act, jti: randomUUID() }, { typ: decodeProtectedHeader(grant).typ });
      const redeemed = await deep.token({ grant_type: JWT_BEARER, assertion: forged, scope: 's:a', resource: API });
      ledger.attack(CATEGORY, 'token endpoint', `jwt-bearer assertion whose act has ${what}, by deep`, httpOutcome(redeemed, { oauth: true }), OAUTH('invalid_grant'));
    }
    console.log(`\nadversarial suite, token-type matrix\n${ledger.table()}`);
    expect(ledger.failures, ledger.failures.slice(0, 30).join('\n')).toEqual([]);
    const t = ledger.totals();
    expect(t.refused).toBe(t.attempts);
    expect(t.accepted).toBe(t.controls);
    expect(t.attempts).toBeGreaterThanOrEqual(20);
    expect(t.controls).toBeGreaterThanOrEqual(10);
  });
});
