import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { jwsSignatureValid, normalizeTyp, parseCompactJws } from '../tokens/compact-jws.js';
import { registeredClaimsProblem, SERVER_ALGS, type ClaimProblem } from '../tokens/our-jwt.js';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { tokenHash } from '../tokens/token-hash.js';
import { verifyWpt } from '../tokens/wpt.js';
import { TokenVerificationError } from '../tokens/token-errors.js';
import { SecurityEventError, VerificationError, VerificationUnavailableError } from './errors.js';
import { SecuritySignals, type SecurityEvent, type SubjectId, type TokenFacts } from './security-signals.js';
import { KeyCache } from './key-cache.js';
import { clientSecretBasic } from './client-credentials.js';
import { MemoryReplayCache, ReplayCacheFullError, type ReplayCache } from './replay-cache.js';
import { RevocationList } from './revocation-list.js';
import { verifyBiscuit as verifyBiscuitChain, type BiscuitChain, type RunLimits } from '../tokens/biscuit-chain.js';
import { BiscuitError, BiscuitTimeoutError } from '../tokens/biscuit-errors.js';
import { BISCUIT_KID_PREFIX, rootKeyIdOfToken } from '../tokens/biscuit-keys.js';

/** How the verifier words a claim problem in its `invalid_token` description. */
const VERIFIER_WORDING: Record<ClaimProblem['claim'], (problem: ClaimProblem['problem']) => string> = {
  sub: () => 'no sub',
  jti: () => 'no jti',
  exp: (p) => (p === 'missing' ? 'no exp' : 'expired'),
  iat: (p) => (p === 'missing' ? 'no iat' : 'issued in the future'),
  nbf: () => 'not yet valid',
  iss: () => 'issued by another issuer',
  aud: () => 'meant for another audience',
};

export interface VerifierOptions {
  /** The agent-sts issuer; its RFC 8414 metadata names the JWKS. */
  issuer: string;
  /** This resource's identifier: the `aud` access tokens must carry. */
  audience: string;
  /** The trust domain, the `aud` of Txn-Tokens (needed to accept them). */
  trustDomain?: string;
  /** Allowed clock skew in seconds (default 5). */
  clockTolerance?: number;
  /** How long a `kid` still unknown after a refetch is refused without another fetch (default 30 s). */
  jwksCooldownMs?: number;
  /** Minimum time between JWKS refetches for unknown `kid`s (default 1 s). */
  jwksMinRefetchMs?: number;
  /** How long a fetched JWKS is used before it is refreshed (default 10 min). */
  jwksMaxAgeMs?: number;
  /** How old a DPoP proof may be (default 60 s). */
  dpopMaxAge?: number;
  /**
   * One-time-identifier store for DPoP proofs and WPTs (default in memory, 100,000 entries). Each is kept
   * through the last second its proof can be accepted (expiry plus `clockTolerance`); a store that cannot
   * record one makes the request refused with 503 `temporarily_unavailable`.
   */
  replayCache?: ReplayCache;
  /** Check revocation by introspection, with this client's credentials, caching answers for `cacheSeconds`. */
  introspection?: { clientId: string; clientSecret: string; cacheSeconds?: number };
  /**
   * Biscuit chains: the verifier's own Datalog policy (default `allow if true` after every block's checks),
   * run limits, and the revocation list (fetched from the issuer and cached up to `revocationMaxAgeMs`,
   * default 5 s; `revocationList: false` turns it off).
   */
  biscuit?: { policy?: { code: string; params?: Record<string, unknown> }; limits?: RunLimits; revocationList?: boolean; revocationMaxAgeMs?: number };
  /**
   * How long security events (CAEP, through `acceptSecurityEvent` or an `SsfReceiver`) are remembered:
   * at least the longest lifetime of the tokens this resource accepts (default 24 h).
   */
  securityEventRetentionSeconds?: number;
  fetch?: typeof fetch;
}

/** An RFC 8693 actor chain entry. */
export interface Act {
  sub: string;
  act?: Act;
}

/** What a verified token says. */
export interface VerifiedToken {
  type: 'access_token' | 'txn_token' | 'wit' | 'biscuit';
  subject: string;
  clientId?: string;
  /** The actor chain, current actor first. */
  actors: string[];
  act?: Act;
  scopes: string[];
  txn?: string;
  intent?: unknown;
  agentChecksum?: string;
  /** Thumbprint of the key the token is bound to. */
  jkt?: string;
  expiresAt: number;
  claims: Record<string, unknown>;
  /** For a Biscuit: its verified chain. */
  chain?: BiscuitChain;
}

export interface HttpRequestLike {
  method: string;
  /** The absolute URL the client called (scheme, host, path). */
  url: string;
  headers: Record<string, string | string[] | undefined>;
}

/** Everything a request proved. */
export interface VerifiedRequest {
  accessToken?: VerifiedToken;
  txnToken?: VerifiedToken;
  workload?: VerifiedToken;
}

const DPOP_ALGS = ['EdDSA', 'Ed25519', 'ES256'];

/** `htu` / WPT `aud` form of a URL: scheme, authority and path, no query or fragment. */
export function targetUri(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

function targetUriOrUndefined(url: string): string | undefined {
  try {
    return targetUri(url);
  } catch {
    return undefined;
  }
}

/** The target URI of the request being verified; a URL that does not parse is the client's error. */
function requestTargetUri(url: string): string {
  const target = targetUriOrUndefined(url);
  if (target === undefined) throw new VerificationError('invalid_request', 'the request URL is not valid');
  return target;
}

function header(headers: HttpRequestLike['headers'], name: string): string | undefined {
  const v = headers[name] ?? headers[name.toLowerCase()];
  if (Array.isArray(v)) {
    if (v.length > 1) throw new VerificationError('invalid_request', `more than one ${name} header`);
    return v[0];
  }
  return v;
}

function actorsOf(act: unknown): { act?: Act; actors: string[] } {
  const actors: string[] = [];
  let cur = act as { sub?: unknown; act?: unknown } | undefined;
  while (cur && typeof cur === 'object' && typeof cur.sub === 'string' && actors.length < 64) {
    actors.push(cur.sub);
    cur = cur.act as typeof cur;
  }
  return actors.length ? { act: act as Act, actors } : { actors };
}

function tokenFacts(v: VerifiedToken): TokenFacts {
  const parties = [v.subject, ...(v.clientId !== undefined ? [v.clientId] : []), ...v.actors];
  return {
    type: v.type, parties, scopes: v.scopes,
    ...(typeof v.claims.jti === 'string' ? { jti: v.claims.jti } : {}),
    ...(typeof v.claims.iat === 'number' ? { iat: v.claims.iat } : {}),
    ...(v.clientId !== undefined ? { clientId: v.clientId } : {}),
    ...(v.claims.aud !== undefined ? { aud: v.claims.aud as string | string[] } : {}),
  };
}

/**
 * Verifies agent-sts tokens at a resource server, offline: access tokens (with DPoP for bound tokens),
 * Txn-Tokens and WIT + WPT pairs. Keys come from the issuer's JWKS, imported once and cached; a
 * verification is one signature check plus claim checks.
 */
export class Verifier {
  private readonly skew: number;
  private readonly replay: ReplayCache;
  private readonly fetchFn: typeof fetch;
  private keys: KeyCache | undefined;
  private introspectionEndpoint: string | undefined;
  private revocations: RevocationList | undefined;
  private setup: Promise<void> | undefined;
  private readonly introspected = new Map<string, { active: boolean; until: number; jti?: string; parties: string[] }>();
  private readonly signals: SecuritySignals;

  constructor(readonly options: VerifierOptions) {
    this.skew = options.clockTolerance ?? 5;
    this.signals = new SecuritySignals(options.issuer, options.securityEventRetentionSeconds ?? 86_400);
    this.replay = options.replayCache ?? new MemoryReplayCache();
    this.fetchFn = options.fetch ?? fetch;
  }

  /** Fetches the issuer's metadata (once); later calls return at once. */
  ready(): Promise<void> {
    this.setup ??= (async () => {
      const res = await this.fetchFn(`${this.options.issuer}/.well-known/oauth-authorization-server`);
      if (!res.ok) throw new Error(`authorization server metadata: HTTP ${res.status}`);
      const meta = (await res.json()) as { issuer?: string; jwks_uri?: string; introspection_endpoint?: string; biscuit_revocation_list_uri?: string };
      if (meta.issuer !== this.options.issuer) throw new Error(`authorization server metadata names another issuer: ${JSON.stringify(meta.issuer)}, expected ${JSON.stringify(this.options.issuer)}`);
      if (!meta.jwks_uri) throw new Error('authorization server metadata has no jwks_uri');
      this.introspectionEndpoint = meta.introspection_endpoint;
      if (meta.biscuit_revocation_list_uri && this.options.biscuit?.revocationList !== false) {
        const maxAgeMs = this.options.biscuit?.revocationMaxAgeMs ?? 5000;
        this.revocations = new RevocationList({ url: meta.biscuit_revocation_list_uri, maxAgeMs, staleMs: 60_000, fetch: this.fetchFn });
      }
      this.keys = new KeyCache({
        jwksUri: meta.jwks_uri, cooldownMs: this.options.jwksCooldownMs ?? 30_000, minRefetchMs: this.options.jwksMinRefetchMs ?? 1000, maxAgeMs: this.options.jwksMaxAgeMs ?? 600_000, fetch: this.fetchFn,
      });
    })().catch((err) => {
      this.setup = undefined;
      throw err;
    });
    return this.setup;
  }

  /** Verifies a compact JWS signed by the server and its registered claims. */
  private async verifyServerJwt(token: string, typ: string, what: string, audience: string | undefined, scheme: 'Bearer' | 'DPoP' = 'Bearer'): Promise<Record<string, unknown>> {
    const fail = (why: string) => new VerificationError('invalid_token', `${what}: ${why}`, scheme);
    const claims = await this.verifyServerSignature(token, typ, fail);
    const problem = registeredClaimsProblem(claims, { issuer: this.options.issuer, audience, now: Math.floor(Date.now() / 1000), tolerance: this.skew, refuseFutureIat: true });
    if (problem) throw fail(VERIFIER_WORDING[problem.claim](problem.problem));
    return claims;
  }

  /** A compact JWS with exactly this `typ`, signed with one of the server's JWT keys: its claims. */
  private async verifyServerSignature(token: string, typ: string, fail: (why: string) => Error): Promise<Record<string, unknown>> {
    const jws = parseCompactJws(token);
    if (!jws) throw fail('malformed');
    const { header: head, claims } = jws;
    const alg = head.alg;
    if (typeof alg !== 'string' || !SERVER_ALGS.includes(alg)) throw fail('alg not allowed');
    if (normalizeTyp(head.typ) !== typ) throw fail(`typ must be ${typ}`);
    if (typeof head.kid !== 'string') throw fail('no kid');
    if (!this.keys) await this.ready();
    const entry = this.keys!.peek(head.kid) ?? (await this.keys!.get(head.kid));
    if (!entry || entry.biscuit) throw fail('signed by an unknown key');
    if (entry.alg !== alg) throw fail('alg does not match the key');
    if (!jwsSignatureValid(jws, alg, entry.key)) throw fail('signature is not valid');
    return claims;
  }

  private result(type: VerifiedToken['type'], claims: Record<string, unknown>): VerifiedToken {
    const { act, actors } = actorsOf(claims.act);
    const cnf = claims.cnf as { jkt?: unknown } | undefined;
    return {
      type,
      subject: claims.sub as string,
      ...(typeof claims.client_id === 'string' ? { clientId: claims.client_id } : {}),
      actors,
      ...(act ? { act } : {}),
      scopes: typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : [],
      ...(typeof claims.txn === 'string' ? { txn: claims.txn } : {}),
      ...(claims.intent !== undefined ? { intent: claims.intent } : {}),
      ...(typeof claims.agent_checksum === 'string' ? { agentChecksum: claims.agent_checksum } : {}),
      ...(typeof cnf?.jkt === 'string' ? { jkt: cnf.jkt } : {}),
      expiresAt: claims.exp as number,
      claims,
    };
  }

  /**
   * An access token from `Authorization: Bearer|DPoP <token>`; for a key-bound token, the DPoP proof
   * (method, URL, `ath`, the bound key, freshness, single use). `requiredScopes` must all be granted.
   */
  async verifyAccessToken(input: { authorization: string | undefined; dpop?: string | undefined; method: string; url: string; requiredScopes?: string[] }): Promise<VerifiedToken> {
    const required = input.requiredScopes ?? [];
    if (!input.authorization) throw new VerificationError('invalid_token', 'an access token is required', 'Bearer', required, true);
    const m = /^(Bearer|DPoP) ([A-Za-z0-9._~+/-]+=*)$/i.exec(input.authorization);
    if (!m) throw new VerificationError('invalid_request', 'the Authorization header must be "Bearer <token>" or "DPoP <token>"');
    const scheme = m[1]!.toLowerCase() === 'dpop' ? 'DPoP' : 'Bearer';
    const token = m[2]!;
    const claims = await this.verifyServerJwt(token, 'at+jwt', 'access token', this.options.audience, scheme);
    const verified = this.result('access_token', claims);
    this.refuseSignalled(verified, scheme);
    if (verified.jkt) {
      if (scheme !== 'DPoP') throw new VerificationError('invalid_token', 'the access token is bound to a key: present it with the DPoP scheme and a proof', 'DPoP');
      await this.verifyDpopProof(input.dpop, { method: input.method, url: input.url, accessToken: token, jkt: verified.jkt });
    } else if (scheme === 'DPoP') {
      throw new VerificationError('invalid_token', 'the access token is not bound to a key: use the Bearer scheme', 'DPoP');
    }
    if (this.options.introspection && !(await this.isActive(token, claims.exp as number, tokenFacts(verified)))) {
      throw new VerificationError('invalid_token', 'the access token has been revoked', scheme);
    }
    const missing = required.filter((s) => !verified.scopes.includes(s));
    if (missing.length) throw new VerificationError('insufficient_scope', `the token lacks scope ${missing.join(' ')}`, scheme, required);
    return verified;
  }

  /**
   * A Biscuit chain presented as a bearer token, checked offline for this resource: the root key its
   * root key id names (from the JWKS), every block's signature and checks, the chain's structure,
   * the revocation list, and `tools` / `spend` within what the last delegate holds, then the verifier's policy.
   */
  async verifyBiscuit(token: string, request: { tools?: string[]; spend?: number } = {}): Promise<VerifiedToken> {
    const fail = (why: string) => new VerificationError('invalid_token', `Biscuit: ${why}`);
    const rootKeyId = rootKeyIdOfToken(token);
    if (rootKeyId === undefined) throw fail('the token names no root key');
    if (!this.keys) await this.ready();
    const kid = `${BISCUIT_KID_PREFIX}${rootKeyId}`;
    const entry = this.keys!.peek(kid) ?? (await this.keys!.get(kid));
    if (!entry?.biscuit) throw fail('signed by an unknown root key');
    let revoked: ReadonlySet<string> | undefined;
    try {
      revoked = await this.revocations?.current();
    } catch {
      throw fail('the revocation list could not be fetched');
    }
    const tools = request.tools ?? [];
    let chain: BiscuitChain;
    try {
      chain = await verifyBiscuitChain(token, {
        rootKeys: new Map([[rootKeyId, entry.biscuit]]),
        request: { tools, resource: this.options.audience, ...(request.spend !== undefined ? { spend: request.spend } : {}), now: new Date() },
        ...(revoked ? { revoked } : {}), ...(this.options.biscuit?.policy ? { policy: this.options.biscuit.policy } : {}), ...(this.options.biscuit?.limits ? { limits: this.options.biscuit.limits } : {}),
      });
    } catch (err) {
      if (err instanceof BiscuitTimeoutError) throw new VerificationUnavailableError(`Biscuit: ${err.message}`);
      if (!(err instanceof BiscuitError)) throw err;
      if (err.failure === 'request' && err.rule === 'tool') {
        throw new VerificationError('insufficient_scope', `Biscuit: ${err.message}`, 'Bearer', tools);
      }
      throw fail(err.message);
    }
    const holders = [chain.authority.holder, ...chain.hops.map((h) => h.delegate)].reverse();
    let act: Act | undefined;
    for (const sub of [...holders].reverse()) act = { sub, ...(act ? { act } : {}) };
    return this.refuseSignalled({
      type: 'biscuit', subject: chain.authority.subject, clientId: chain.current.holder, actors: holders, ...(act ? { act } : {}),
      scopes: chain.current.rights, txn: chain.authority.txn, expiresAt: Math.floor(chain.current.expires.getTime() / 1000),
      claims: { iss: chain.authority.issuer, sub: chain.authority.subject, jti: chain.authority.tokenId, txn: chain.authority.txn }, chain,
    });
  }

  /** RFC 9449 §4.3 checks of a DPoP proof for a request carrying `accessToken`. */
  private async verifyDpopProof(proof: string | undefined, req: { method: string; url: string; accessToken: string; jkt: string }): Promise<void> {
    const fail = (why: string) => new VerificationError('invalid_dpop_proof', `DPoP proof: ${why}`, 'DPoP');
    if (!proof) throw fail('missing');
    const jws = parseCompactJws(proof);
    if (!jws) throw fail('malformed');
    const { header: head, claims } = jws;
    if (normalizeTyp(head.typ) !== 'dpop+jwt') throw fail('typ must be dpop+jwt');
    const alg = head.alg as string;
    if (!DPOP_ALGS.includes(alg)) throw fail('alg not allowed');
    const jwk = head.jwk as JWK | undefined;
    if (!jwk || typeof jwk !== 'object' || 'd' in jwk) throw fail('jwk must be a public key');
    let key: KeyObject;
    try {
      key = createPublicKey({ key: jwk as never, format: 'jwk' });
    } catch {
      throw fail('jwk is not usable');
    }
    if (!jwsSignatureValid(jws, alg, key)) throw fail('signature is not valid');
    if (claims.htm !== req.method.toUpperCase()) throw fail('htm does not match the request method');
    const called = requestTargetUri(req.url);
    if (typeof claims.htu !== 'string' || targetUriOrUndefined(claims.htu) !== called) throw fail('htu does not match the request URL');
    const now = Math.floor(Date.now() / 1000);
    const maxAge = this.options.dpopMaxAge ?? 60;
    if (typeof claims.iat !== 'number' || claims.iat > now + this.skew || claims.iat < now - maxAge - this.skew) throw fail('iat is not fresh');
    if (typeof claims.jti !== 'string' || !claims.jti) throw fail('no jti');
    if (claims.ath !== tokenHash(req.accessToken)) throw fail('ath does not match the access token');
    if ((await calculateJwkThumbprint(jwk)) !== req.jkt) throw fail('signed by another key than the token is bound to');
    // Accepted while now <= iat + maxAge + skew: claimed through that second.
    if (!(await this.claimOnce(`dpop ${req.jkt} ${claims.jti}`, claims.iat + maxAge + this.skew, 'DPoP'))) throw fail('replayed');
  }

  /** Claims a one-time identifier through `acceptedUntil`; a store that cannot record it refuses the request (503). */
  private async claimOnce(id: string, acceptedUntil: number, scheme: 'Bearer' | 'DPoP'): Promise<boolean> {
    try {
      return await this.replay.claim(id, acceptedUntil);
    } catch (err) {
      const full = err instanceof ReplayCacheFullError;
      const refusal = new VerificationError('temporarily_unavailable', full
        ? 'the replay cache is full: one-time proofs are refused until entries expire'
        : 'the replay cache could not record the one-time proof', scheme);
      refusal.retryAfterSeconds = full ? err.retryAfterSeconds : 1;
      throw refusal;
    }
  }

  /** A Txn-Token from the `Txn-Token` header: `typ: txntoken+jwt`, `aud` = the trust domain. */
  async verifyTxnToken(token: string): Promise<VerifiedToken> {
    if (!this.options.trustDomain) throw new VerificationError('invalid_request', 'this resource does not accept Txn-Tokens');
    const claims = await this.verifyServerJwt(token, 'txntoken+jwt', 'Txn-Token', this.options.trustDomain);
    if (typeof claims.txn !== 'string') throw new VerificationError('invalid_token', 'Txn-Token: no txn');
    return this.refuseSignalled(this.result('txn_token', claims));
  }

  /** A WIT + WPT pair for this request: the WPT signed by the WIT's key, for this URL, used once, hashing the tokens riding along. */
  async verifyWorkload(input: { wit: string; wpt: string; url: string; accessToken?: string; txnToken?: string }): Promise<VerifiedToken> {
    const claims = await this.verifyServerJwt(input.wit, 'wit+jwt', 'WIT', undefined);
    const jwk = (claims.cnf as { jwk?: JWK } | undefined)?.jwk;
    if (!jwk?.alg) throw new VerificationError('invalid_token', 'WIT: no cnf.jwk with alg');
    let wpt;
    try {
      wpt = await verifyWpt(input.wpt, {
        wit: input.wit, witJwk: jwk, audience: requestTargetUri(input.url), now: Math.floor(Date.now() / 1000), clockTolerance: this.skew,
        ...(input.accessToken ? { accessToken: input.accessToken } : {}), ...(input.txnToken ? { txnToken: input.txnToken } : {}),
      });
    } catch (err) {
      if (err instanceof TokenVerificationError) throw new VerificationError('invalid_token', err.message);
      throw err;
    }
    const verified = this.refuseSignalled(this.result('wit', claims));
    // Accepted until exp + skew: claimed through that second.
    if (!(await this.claimOnce(`wpt ${claims.sub as string} ${wpt.jti}`, wpt.exp + this.skew, 'Bearer'))) throw new VerificationError('invalid_token', 'the WPT was already used');
    return verified;
  }

  /**
   * Everything a request carries: `Authorization` (access token, with `DPoP`), `Txn-Token`, and
   * `Workload-Identity-Token` + `Workload-Proof-Token`. At least one must be there; `requiredScopes`
   * apply to the access token, or to the Txn-Token when it comes alone.
   */
  async verifyRequest(req: HttpRequestLike, opts: { requiredScopes?: string[]; spend?: number } = {}): Promise<VerifiedRequest> {
    const authorization = header(req.headers, 'authorization');
    const dpop = header(req.headers, 'dpop');
    const txn = header(req.headers, 'txn-token');
    const wit = header(req.headers, 'workload-identity-token');
    const wpt = header(req.headers, 'workload-proof-token');
    const out: VerifiedRequest = {};
    if (!authorization && !txn && !wit) {
      throw new VerificationError('invalid_token', 'an access token is required', 'Bearer', opts.requiredScopes ?? [], true);
    }
    const bearer = authorization ? /^Bearer ([A-Za-z0-9_-]+=*)$/i.exec(authorization)?.[1] : undefined;
    if (bearer && !dpop) {
      // A single base64url string with no dots is a Biscuit chain; the required scopes are its tools.
      out.accessToken = await this.verifyBiscuit(bearer, { tools: opts.requiredScopes ?? [], ...(opts.spend !== undefined ? { spend: opts.spend } : {}) });
    } else if (authorization) {
      out.accessToken = await this.verifyAccessToken({ authorization, dpop, method: req.method, url: req.url, requiredScopes: opts.requiredScopes ?? [] });
    }
    if (txn) {
      out.txnToken = await this.verifyTxnToken(txn);
      const missing = !authorization ? (opts.requiredScopes ?? []).filter((s) => !out.txnToken!.scopes.includes(s)) : [];
      if (missing.length) throw new VerificationError('insufficient_scope', `the Txn-Token lacks scope ${missing.join(' ')}`, 'Bearer', opts.requiredScopes);
    }
    if (wit || wpt) {
      if (!wit || !wpt) throw new VerificationError('invalid_request', 'Workload-Identity-Token and Workload-Proof-Token go together');
      const accessToken = authorization?.split(' ')[1];
      out.workload = await this.verifyWorkload({ wit, wpt, url: req.url, ...(accessToken ? { accessToken } : {}), ...(txn ? { txnToken: txn } : {}) });
    }
    return out;
  }

  /** Refuses a verified token that a security event has revoked or narrowed since it was issued. */
  private refuseSignalled(verified: VerifiedToken, scheme: 'Bearer' | 'DPoP' = 'Bearer'): VerifiedToken {
    const why = this.signals.refusal(tokenFacts(verified));
    if (why !== undefined) throw new VerificationError('invalid_token', `${verified.type === 'wit' ? 'WIT' : 'token'} refused: ${why}`, scheme);
    return verified;
  }

  /**
   * Verifies a Security Event Token (RFC 8417) from the issuer's Shared Signals transmitter, signed
   * with one of its JWT keys, `typ: secevent+jwt`, one event, a `sub_id`; and acts on it: later
   * verifications refuse the tokens it revokes, and cached keys and introspection answers for its
   * subjects are dropped. `audience` is the stream's `aud` when the stream has one.
   * Throws a SecurityEventError carrying the RFC 8935 error code.
   */
  async acceptSecurityEvent(set: string, opts: { audience?: string | string[] } = {}): Promise<SecurityEvent> {
    const fail = (why: string) => new SecurityEventError(/key|signature|signed/.test(why) ? 'invalid_key' : 'invalid_request', `security event: ${why}`);
    const claims = await this.verifyServerSignature(set, 'secevent+jwt', fail);
    if (claims.iss !== this.options.issuer) throw new SecurityEventError('invalid_issuer', 'security event: issued by another issuer');
    if (opts.audience !== undefined) {
      const expected = Array.isArray(opts.audience) ? opts.audience : [opts.audience];
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (!aud.some((a) => expected.includes(a as string))) throw new SecurityEventError('invalid_audience', 'security event: meant for another audience');
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims.jti !== 'string' || !claims.jti) throw fail('no jti');
    if (typeof claims.iat !== 'number' || claims.iat > now + this.skew) throw fail('iat missing or in the future');
    const events = claims.events;
    if (!events || typeof events !== 'object' || Array.isArray(events)) throw fail('no events');
    const types = Object.keys(events);
    if (types.length !== 1) throw fail('must carry exactly one event');
    const event = (events as Record<string, unknown>)[types[0]!];
    if (!event || typeof event !== 'object' || Array.isArray(event)) throw fail('the event is not an object');
    const subject = claims.sub_id as SubjectId | undefined;
    if (!subject || typeof subject !== 'object' || typeof subject.format !== 'string') throw fail('no sub_id');
    const accepted: SecurityEvent = { jti: claims.jti, iat: claims.iat, type: types[0]!, subject, event: event as Record<string, unknown> };
    const effect = this.signals.apply(accepted, now);
    if (effect.keys) this.keys?.invalidate();
    if (effect.jtis.length || effect.agents.length) {
      for (const [key, entry] of this.introspected) {
        if ((entry.jti && effect.jtis.includes(entry.jti)) || entry.parties.some((p) => effect.agents.includes(p))) this.introspected.delete(key);
      }
    }
    return accepted;
  }

  private async isActive(token: string, exp: number, facts: { jti?: string; parties: string[] }): Promise<boolean> {
    const key = createHash('sha256').update(token).digest('base64url');
    const now = Date.now();
    const cached = this.introspected.get(key);
    if (cached && cached.until > now) return cached.active;
    const { clientId, clientSecret, cacheSeconds = 10 } = this.options.introspection!;
    if (!this.introspectionEndpoint) await this.ready();
    const res = await this.fetchFn(this.introspectionEndpoint!, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: clientSecretBasic(clientId, clientSecret),
      },
      body: new URLSearchParams({ token }).toString(),
    });
    if (!res.ok) throw new VerificationError('invalid_token', 'the token\'s status could not be checked');
    const active = ((await res.json()) as { active?: unknown }).active === true;
    this.introspected.set(key, { active, until: Math.min(now + cacheSeconds * 1000, exp * 1000), ...facts });
    if (this.introspected.size > 50_000) this.introspected.delete(this.introspected.keys().next().value!);
    return active;
  }
}
