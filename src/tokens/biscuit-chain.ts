import { datalogParams, loadBiscuit, type BiscuitApi } from './biscuit-wasm.js';
import { biscuitPublicKey } from './biscuit-keys.js';
import { BiscuitError, BiscuitTimeoutError, fromLibraryError } from './biscuit-errors.js';
import {
  AUTHORITY_QUERY, HOLDER_KEY_QUERY, HOP_KEYS_QUERY, HOPS_QUERY, keyTextOf, NARROW_NAMES, NARROW_QUERY, requestFacts,
  type AuthorityFacts, type BiscuitLimits, type BiscuitRequest, type HopFacts,
} from './biscuit-blocks.js';

type Biscuit = BiscuitApi['Biscuit']['prototype'];
type Authorizer = BiscuitApi['Authorizer']['prototype'];

/**
 * Limits on Datalog evaluation: facts and iterations for every query and the authorization itself;
 * `max_time_micro` for all of one verification's evaluations together.
 */
export interface RunLimits {
  max_facts: number;
  max_iterations: number;
  max_time_micro: number;
}
// The facts and iterations limits bound what a token can make a verifier do, the same on any machine; a token
// past them is refused (`run_limit`). The time limit is only a backstop against work they do not bound: wall
// time, so a busy machine exhausts it with an honest token (an honest chain takes about a millisecond; on a
// 2-core machine at load 10, rare verifications took over 300 ms, and a fresh wasm instance's first one 3 s at
// load 12). Its expiry is therefore no refusal but a BiscuitTimeoutError, which callers answer as transient.
export const DEFAULT_RUN_LIMITS: RunLimits = { max_facts: 1000, max_iterations: 100, max_time_micro: 2_000_000 };

/** Run limits with the time by which the whole verification must be done (`performance.now()` milliseconds). */
type TimedLimits = RunLimits & { deadline?: number };

/** The limits for one more evaluation: the facts and iterations as given, the time what is left until the deadline. */
function remaining(limits: TimedLimits, during: string): RunLimits {
  const { max_facts, max_iterations, max_time_micro, deadline } = limits;
  if (deadline === undefined) return { max_facts, max_iterations, max_time_micro };
  const left = Math.floor((deadline - performance.now()) * 1000);
  if (left <= 0) throw new BiscuitTimeoutError(during);
  return { max_facts, max_iterations, max_time_micro: Math.min(max_time_micro, left) };
}

/** Tokens larger than this are refused before parsing. */
export const MAX_BISCUIT_CHARS = 48 * 1024;
/** Blocks beyond this are refused before any Datalog runs, whatever the token's `max_depth` says. */
export const MAX_BISCUIT_BLOCKS = 17;

export interface BiscuitHop extends HopFacts {
  /** Who signed the block: the delegator's own key, or the server's root key for a delegation it made. */
  signedBy: 'delegator' | 'issuer';
}

/** A verified chain: the authority, each delegation in order, and what the last delegate may do. */
export interface BiscuitChain {
  authority: AuthorityFacts;
  hops: BiscuitHop[];
  /** The limits in force (the last block's: every block only narrows) and who holds them now. */
  current: BiscuitLimits & { holder: string; holderKey?: string };
  /** One per block, authority first (hex). */
  revocationIds: string[];
  rootKeyId: number;
}

const B64URL = /^[A-Za-z0-9_-]+={0,2}$/;

/** Parses a token with the root key its root key id names; refuses unknown roots and bad signatures. */
export function parseBiscuit(b: BiscuitApi, token: string, rootKeys: ReadonlyMap<number, string>): { biscuit: Biscuit; rootKeyId: number } {
  if (typeof token !== 'string' || !token) throw new BiscuitError('malformed', 'no token');
  if (token.length > MAX_BISCUIT_CHARS) throw new BiscuitError('too_large', `the token is larger than ${MAX_BISCUIT_CHARS} characters`);
  if (!B64URL.test(token)) throw new BiscuitError('malformed', 'the token is not base64url');
  const seen: { called: boolean; id: number | null; known: boolean } = { called: false, id: null, known: false };
  // The provider must not throw (that breaks the wasm instance): an unknown id gets a key that fails.
  const provider = (id: number | null) => {
    seen.called = true;
    seen.id = id;
    const text = id === null ? undefined : rootKeys.get(id);
    seen.known = text !== undefined;
    return biscuitPublicKey(b, text ?? unknownRoot(b));
  };
  try {
    const biscuit = b.Biscuit.fromBase64WithProvider(token, provider);
    return { biscuit, rootKeyId: seen.id! };
  } catch (err) {
    if (seen.called && !seen.known && seen.id !== null) throw new BiscuitError('unknown_root', `the token's root key ${seen.id} is not one of the issuer's`);
    if (seen.called && !seen.known) throw new BiscuitError('unknown_root', 'the token names no root key of the issuer');
    throw fromLibraryError(err, 'parsing');
  }
}

let unknownRootKey: string | undefined;
/** A key whose private part was thrown away: whatever claims to be signed by it fails. */
function unknownRoot(b: BiscuitApi): string {
  if (!unknownRootKey) {
    const pair = new b.KeyPair(b.SignatureAlgorithm.Ed25519);
    unknownRootKey = pair.getPublicKey().toString();
    pair.free();
  }
  return unknownRootKey;
}

const str = (v: unknown, what: string, block: number, max = 2048): string => {
  if (typeof v !== 'string' || !v || v.length > max) throw new BiscuitError('malformed', `${what} must be a non-empty string`, block);
  return v;
};
const int = (v: unknown, what: string, block: number): number => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new BiscuitError('malformed', `${what} must be a non-negative integer`, block);
  return v;
};
const strings = (v: unknown, what: string, block: number): string[] => {
  if (!(v instanceof Set) || [...v].some((x) => typeof x !== 'string')) throw new BiscuitError('malformed', `${what} must be a set of strings`, block);
  return [...(v as Set<string>)].sort();
};
const date = (v: unknown, what: string, block: number): Date => {
  if (!(v instanceof Date) || Number.isNaN(v.getTime())) throw new BiscuitError('malformed', `${what} must be a date`, block);
  return v;
};
const keyText = (v: unknown, what: string, block: number): string => {
  const text = keyTextOf(v);
  if (!text) throw new BiscuitError('malformed', `${what} must be the bytes of an ed25519 or compressed secp256r1 public key`, block);
  return text;
};

/** Parsed query rules, kept per wasm instance (a rule is only read by a query; its scope is set each time). */
const rules = new WeakMap<BiscuitApi, Map<string, BiscuitApi['Rule']['prototype']>>();
function ruleFor(b: BiscuitApi, source: string): BiscuitApi['Rule']['prototype'] {
  let byText = rules.get(b);
  if (!byText) rules.set(b, (byText = new Map()));
  let rule = byText.get(source);
  if (!rule) byText.set(source, (rule = b.Rule.fromString(source)));
  return rule;
}

function query(b: BiscuitApi, authorizer: Authorizer, source: string, limits: TimedLimits, signer?: string): unknown[][] {
  const rule = ruleFor(b, source);
  try {
    if (signer) rule.setScope('signer', signer);
    return (authorizer.queryWithLimits(rule, remaining(limits, 'reading the chain')) as { terms(): unknown[]; free(): void }[]).map((f) => {
      const terms = f.terms();
      f.free();
      return terms;
    });
  } catch (err) {
    throw fromLibraryError(err, 'reading the chain');
  }
}

function readAuthority(b: BiscuitApi, authorizer: Authorizer, limits: RunLimits): AuthorityFacts {
  const rows = query(b, authorizer, AUTHORITY_QUERY, limits);
  if (rows.length !== 1) throw new BiscuitError('malformed', rows.length ? 'the authority block states its facts more than once' : 'the authority block lacks agent-sts facts', 0);
  const [iss, sub, jti, txn, holder, rights, aud, budget, depth, exp] = rows[0]!;
  const keys = query(b, authorizer, HOLDER_KEY_QUERY, limits);
  if (keys.length > 1) throw new BiscuitError('malformed', 'the authority block names more than one holder key', 0);
  return {
    issuer: str(iss, 'issuer', 0), subject: str(sub, 'subject', 0), tokenId: str(jti, 'token_id', 0), txn: str(txn, 'txn', 0),
    holder: str(holder, 'holder', 0), rights: strings(rights, 'rights', 0), audiences: strings(aud, 'audiences', 0),
    budget: int(budget, 'budget', 0), maxDepth: int(depth, 'max_depth', 0), expires: date(exp, 'expires', 0),
    ...(keys.length ? { holderKey: keyText(keys[0]![0], 'holder_key', 0) } : {}),
  };
}

/** The hop, narrowing and key facts a signer's blocks state (each row starts with the hop index). */
function hopsSignedBy(b: BiscuitApi, authorizer: Authorizer, signer: string, limits: RunLimits) {
  return {
    hops: query(b, authorizer, HOPS_QUERY, limits, signer),
    narrows: query(b, authorizer, NARROW_QUERY, limits, signer),
    keys: query(b, authorizer, HOP_KEYS_QUERY, limits, signer),
  };
}

type Signed = ReturnType<typeof hopsSignedBy>;
const LIMITS = Object.entries(NARROW_NAMES) as [keyof BiscuitLimits, string][];

/** Hop `i` as a signer's blocks state it, its limits those it narrows and otherwise `prev`'s. */
function hopFrom(found: Signed, i: number, prev: BiscuitLimits, signedBy: BiscuitHop['signedBy']): BiscuitHop {
  const [, from, to, context] = found.hops.find((r) => r[0] === i)!;
  const keys = found.keys.filter((k) => k[0] === i);
  if (keys.length > 1) throw new BiscuitError('malformed', 'the block names more than one delegate key', i);
  const narrows = found.narrows.filter((n) => n[0] === i);
  const limits: BiscuitLimits = { rights: prev.rights, audiences: prev.audiences, budget: prev.budget, expires: prev.expires };
  for (const [, what] of narrows) {
    if (!LIMITS.some(([, name]) => name === what)) throw new BiscuitError('malformed', `the block narrows an unknown limit ${JSON.stringify(what)}`, i);
  }
  for (const [limit, name] of LIMITS) {
    const stated = narrows.filter((n) => n[1] === name);
    if (stated.length > 1) throw new BiscuitError('malformed', `the block narrows ${name} more than once`, i);
    if (!stated.length) continue;
    const value = stated[0]![2];
    if (limit === 'rights' || limit === 'audiences') limits[limit] = strings(value, `narrow ${name}`, i);
    else if (limit === 'budget') limits.budget = int(value, 'narrow budget', i);
    else limits.expires = date(value, 'narrow expires', i);
  }
  return {
    index: i, delegator: str(from, 'delegator', i), delegate: str(to, 'delegate', i), context: typeof context === 'string' ? context : '',
    ...limits, signedBy, ...(keys.length ? { delegateKey: keyText(keys[0]![1], 'hop_key', i) } : {}),
  };
}

const subset = (a: readonly string[], of: readonly string[]) => a.every((x) => of.includes(x));

/** A context says something: at least one letter, digit, punctuation mark or symbol (not only spaces or invisible characters). */
export const hasVisibleText = (text: string) => /[\p{L}\p{N}\p{P}\p{S}]/u.test(text);

/**
 * Reads and checks the chain's structure, offline: the authority's facts; for each delegation block, a
 * block signed by the key the previous block named for its delegate (or by the root key), stating its
 * hop once, at its place, with a non-empty context, the previous delegate as delegator, and limits
 * that only narrow; depth within `max_depth`; nothing expired.
 */
export function readChain(b: BiscuitApi, biscuit: Biscuit, authorizer: Authorizer, opts: { rootKey: string; rootKeyId: number; now: Date; limits: RunLimits }): BiscuitChain {
  const blocks = biscuit.countBlocks();
  const authority = readAuthority(b, authorizer, opts.limits);
  if (blocks - 1 > authority.maxDepth) throw new BiscuitError('depth', `the chain has ${blocks - 1} delegations; max_depth is ${authority.maxDepth}`, authority.maxDepth + 1);

  const bySigner = new Map<string, ReturnType<typeof hopsSignedBy>>();
  const signedBy = (key: string) => {
    let found = bySigner.get(key);
    if (!found) bySigner.set(key, (found = hopsSignedBy(b, authorizer, key, opts.limits)));
    return found;
  };

  const hops: BiscuitHop[] = [];
  let prev: BiscuitLimits & { holder: string; holderKey?: string } = { ...authority };
  for (let i = 1; i < blocks; i++) {
    const candidates: { found: Signed; signedBy: BiscuitHop['signedBy'] }[] = [];
    for (const [signer, who] of [[prev.holderKey, 'delegator'], [opts.rootKey, 'issuer']] as const) {
      // Blocks signed by the root key come from the issuer alone: read them only when the delegator signed none here.
      if (!signer || (who === 'issuer' && candidates.length)) continue;
      const found = signedBy(signer);
      const stated = found.hops.filter((r) => r[0] === i).length;
      if (stated > 1) throw new BiscuitError('malformed', 'the delegation is stated more than once', i);
      if (stated) candidates.push({ found, signedBy: who });
    }
    if (candidates.length === 0) {
      throw new BiscuitError('signer', prev.holderKey
        ? `no delegation signed by ${prev.holder}'s key (the delegate named before it) is at this place`
        : `no delegation signed by the issuer is at this place (${prev.holder} has no key to sign one)`, i);
    }
    if (candidates.length > 1) throw new BiscuitError('malformed', 'the delegation is stated more than once', i);
    const hop = hopFrom(candidates[0]!.found, i, prev, candidates[0]!.signedBy);
    if (!hasVisibleText(hop.context)) throw new BiscuitError('context', 'the delegation states no context (purpose)', i);
    if (hop.delegator !== prev.holder) throw new BiscuitError('delegator', `the delegator ${JSON.stringify(hop.delegator)} is not the previous delegate ${JSON.stringify(prev.holder)}`, i);
    if (!subset(hop.rights, prev.rights)) throw new BiscuitError('widened', `the delegation widens rights: ${hop.rights.filter((r) => !prev.rights.includes(r)).join(' ')}`, i);
    if (!subset(hop.audiences, prev.audiences)) throw new BiscuitError('widened', 'the delegation widens audiences', i);
    if (hop.budget > prev.budget) throw new BiscuitError('widened', `the delegation raises the budget from ${prev.budget} to ${hop.budget}`, i);
    if (hop.expires.getTime() > prev.expires.getTime()) throw new BiscuitError('widened', 'the delegation outlives the block before it', i);
    hops.push(hop);
    prev = { rights: hop.rights, audiences: hop.audiences, budget: hop.budget, expires: hop.expires, holder: hop.delegate, ...(hop.delegateKey ? { holderKey: hop.delegateKey } : {}) };
  }

  // Hop facts anywhere else (an index out of range, a second statement of a hop) mean blocks out of place.
  for (const found of bySigner.values()) {
    const counts = new Map<unknown, number>();
    for (const [i] of found.hops) counts.set(i, (counts.get(i) ?? 0) + 1);
    for (const [i, n] of counts) {
      if (typeof i !== 'number' || i < 1 || i >= blocks || n > 1) throw new BiscuitError('malformed', `a block states delegation ${String(i)} out of place`, typeof i === 'number' && i >= 1 && i < blocks ? i : undefined);
    }
  }

  const expiredAt = [authority, ...hops].findIndex((blk) => blk.expires.getTime() <= opts.now.getTime());
  if (expiredAt >= 0) throw new BiscuitError('expired', 'the token has expired', expiredAt);
  return { authority, hops, current: prev, revocationIds: (biscuit.getRevocationIdentifiers() as string[]).map(String), rootKeyId: opts.rootKeyId };
}

export interface VerifyBiscuitOptions {
  /** Root public keys by root key id, in Biscuit text form (from the issuer's JWKS). */
  rootKeys: ReadonlyMap<number, string>;
  request: BiscuitRequest;
  /** Revoked revocation ids (hex); a token holding any of them is refused. */
  revoked?: ReadonlySet<string>;
  /** The verifier's own Datalog (checks and allow/deny policies), with parameters; default `allow if true`. */
  policy?: { code: string; params?: Record<string, unknown> };
  limits?: RunLimits;
}

/**
 * Verifies an agent-sts Biscuit for one request, offline: signatures with the issuer's root key, the
 * chain's structure ({@link readChain}), revocation ids, the request within the last delegate's
 * limits, and every block's checks plus the verifier's policy, all under run limits.
 */
export async function verifyBiscuit(token: string, opts: VerifyBiscuitOptions): Promise<BiscuitChain> {
  const b = await loadBiscuit();
  return verifyBiscuitWith(b, token, opts);
}

export function verifyBiscuitWith(b: BiscuitApi, token: string, opts: VerifyBiscuitOptions): BiscuitChain {
  const request = requestFacts(opts.request);
  return withChain(b, token, { ...opts, now: opts.request.now, code: [request, opts.policy ?? { code: 'allow if true' }] }, (chain, authorizer, limits) => {
    checkRequest(chain, opts.request);
    try {
      authorizer.authorizeWithLimits(remaining(limits, 'authorizing'));
    } catch (err) {
      throw fromLibraryError(err, 'authorizing');
    }
    return chain;
  });
}

/**
 * The chain of a token, verified as far as it can be without a request: signatures, structure,
 * revocation ids and expiry. For delegators and for the issuer's own introspection and delegation.
 */
export function inspectBiscuit(b: BiscuitApi, token: string, opts: { rootKeys: ReadonlyMap<number, string>; now: Date; revoked?: ReadonlySet<string>; limits?: RunLimits }): BiscuitChain {
  return withChain(b, token, { ...opts, code: [{ code: 'time({now});', params: { now: opts.now } }] }, (chain) => chain);
}

/** Parses, checks size and revocation, builds an authorizer with `code`, reads the chain, then runs `use`. */
function withChain<T>(b: BiscuitApi, token: string, opts: { rootKeys: ReadonlyMap<number, string>; now: Date; revoked?: ReadonlySet<string>; limits?: RunLimits; code: { code: string; params?: Record<string, unknown> }[] },
  use: (chain: BiscuitChain, authorizer: Authorizer, limits: TimedLimits) => T): T {
  const given = opts.limits ?? DEFAULT_RUN_LIMITS;
  const limits: TimedLimits = { ...given, deadline: performance.now() + given.max_time_micro / 1000 };
  const { biscuit, rootKeyId } = parseBiscuit(b, token, opts.rootKeys);
  let authorizer: Authorizer | undefined;
  try {
    const blocks = biscuit.countBlocks();
    if (blocks > MAX_BISCUIT_BLOCKS) throw new BiscuitError('depth', `the token has ${blocks} blocks; at most ${MAX_BISCUIT_BLOCKS} are read`);
    if (opts.revoked?.size) {
      const ids = biscuit.getRevocationIdentifiers() as string[];
      const at = ids.findIndex((id) => opts.revoked!.has(String(id)));
      if (at >= 0) throw new BiscuitError('revoked', 'the token, or a token it was delegated from, has been revoked', at);
    }
    try {
      // `buildAuthenticated` consumes the builder.
      const builder = new b.AuthorizerBuilder();
      for (const part of opts.code) builder.addCodeWithParameters(part.code, datalogParams(part.params ?? {}), {});
      authorizer = builder.buildAuthenticated(biscuit);
    } catch (err) {
      throw fromLibraryError(err, 'building the authorizer');
    }
    const chain = readChain(b, biscuit, authorizer, { rootKey: opts.rootKeys.get(rootKeyId)!, rootKeyId, now: opts.now, limits });
    return use(chain, authorizer, limits);
  } finally {
    authorizer?.free();
    biscuit.free();
  }
}

/** The request against the last delegate's limits (the blocks' own checks say the same in Datalog). */
function checkRequest(chain: BiscuitChain, r: BiscuitRequest): void {
  const { current } = chain;
  const last = chain.hops.length;
  const outside = (r.tools ?? []).filter((t) => !current.rights.includes(t));
  if (outside.length) throw new BiscuitError('request', `the token does not allow ${outside.map((t) => JSON.stringify(t)).join(', ')}`, last, 'tool');
  if (r.resource !== undefined && !current.audiences.includes(r.resource)) throw new BiscuitError('request', `the token is not for ${JSON.stringify(r.resource)}`, last, 'resource');
  if (r.spend !== undefined && r.spend > current.budget) throw new BiscuitError('request', `spending ${r.spend} exceeds the budget of ${current.budget}`, last, 'spend');
}
