import type { KeyObject, webcrypto } from 'node:crypto';
import { asKeyObject, jwsSignatureValid, normalizeTyp, parseCompactJws, signCompactJws } from './compact-jws.js';
import { TokenVerificationError } from './token-errors.js';

/** The server key a token is signed with. */
export interface Signer {
  kid: string;
  alg: string;
  key: KeyObject | webcrypto.CryptoKey;
  /** Sign on libuv's thread pool rather than on the event loop (SIGN_ON_THREAD_POOL). */
  threadPool?: boolean;
}

/** Finds a published server JWT signing key, and the algorithm it signs with, by `kid`. */
export type KeyResolver = (kid: string | undefined) => Promise<{ key: KeyObject; alg: string } | undefined>;

/** The algorithms our own tokens are signed with; nothing else (no `none`, no HMAC) verifies. */
export const SERVER_ALGS = ['EdDSA', 'ES256'];

export async function signJwt(typ: string, claims: Record<string, unknown>, signer: Signer): Promise<string> {
  return signCompactJws({ typ, alg: signer.alg, kid: signer.kid }, claims, asKeyObject(signer.key), signer.threadPool);
}

/** Why a server JWT's registered claims don't hold: a claim and what is wrong with it. */
export interface ClaimProblem {
  claim: 'sub' | 'jti' | 'exp' | 'iat' | 'nbf' | 'iss' | 'aud';
  problem: 'missing' | 'expired' | 'in the future' | 'not yet valid' | 'unexpected';
}

/**
 * The registered claims every JWT this server signs carries, checked the same way by the server and by the
 * verifier library: `sub` and `jti` strings, finite `exp` and `iat`, our issuer, the audience when one is
 * expected, unexpired, and `nbf` (when present) a number already passed. With `refuseFutureIat`, also not
 * issued in the future, as the verifier library asks (RFC 7519 leaves `iat` to the application; the server
 * decides nothing on it, and its tests run it with a clock apart from oidc-provider's). Returns the first problem.
 */
export function registeredClaimsProblem(claims: Record<string, unknown>, opts: {
  issuer: string; audience?: string | undefined; now: number; tolerance: number; refuseFutureIat?: boolean;
}): ClaimProblem | undefined {
  for (const claim of ['sub', 'jti'] as const) {
    if (typeof claims[claim] !== 'string') return { claim, problem: 'missing' };
  }
  for (const claim of ['exp', 'iat'] as const) {
    if (typeof claims[claim] !== 'number' || !Number.isFinite(claims[claim])) return { claim, problem: 'missing' };
  }
  if (claims.iss !== opts.issuer) return { claim: 'iss', problem: 'unexpected' };
  if (opts.audience !== undefined) {
    const aud = claims.aud;
    if (!(aud === opts.audience || (Array.isArray(aud) && aud.includes(opts.audience)))) return { claim: 'aud', problem: 'unexpected' };
  }
  if ((claims.exp as number) <= opts.now - opts.tolerance) return { claim: 'exp', problem: 'expired' };
  if (opts.refuseFutureIat && (claims.iat as number) > opts.now + opts.tolerance) return { claim: 'iat', problem: 'in the future' };
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || !(claims.nbf <= opts.now + opts.tolerance))) return { claim: 'nbf', problem: 'not yet valid' };
  return undefined;
}

/** How the server words a claim problem (as jose does). */
const OUR_WORDING: Record<ClaimProblem['claim'], (problem: ClaimProblem['problem']) => string> = {
  sub: () => 'sub claim is not valid (missing)',
  jti: () => 'jti claim is not valid (missing)',
  exp: (p) => (p === 'missing' ? 'exp claim is not valid (missing)' : 'has expired'),
  iat: () => 'iat claim is not valid (missing)',
  nbf: () => 'nbf claim is not valid (not yet valid)',
  iss: () => 'iss claim is not valid (unexpected "iss" claim value)',
  aud: () => 'aud claim is not valid (unexpected "aud" claim value)',
};

/**
 * Verifies a JWT this server signed: one of our published keys with the algorithm it is published for,
 * `typ` exactly as given (so no other token type passes for this one), and the registered claims (see
 * {@link registeredClaimsProblem}).
 */
export async function verifyOurJwt(token: string, opts: {
  typ: string; what: string; issuer: string; keyFor: KeyResolver; now: number; audience?: string; clockTolerance?: number;
  /**
   * The caller knows these exact bytes passed this verification before: the signature operation is
   * skipped (the key must still be published, and every claim is checked again).
   */
  signatureVerifiedBefore?: boolean;
}): Promise<Record<string, unknown>> {
  const refuse = (why: string) => new TokenVerificationError(`the ${opts.what} ${why}`);
  const jws = parseCompactJws(token);
  if (!jws) throw refuse('is malformed');
  const { header, claims } = jws;
  if (typeof header.alg !== 'string' || !SERVER_ALGS.includes(header.alg)) throw refuse('alg is not allowed');
  if (normalizeTyp(header.typ) !== normalizeTyp(opts.typ)) throw refuse(`typ claim is not valid (must be ${opts.typ})`);
  const key = await opts.keyFor(typeof header.kid === 'string' ? header.kid : undefined);
  if (!key) throw refuse('is not signed by a key of this server');
  if (key.alg !== header.alg || (!opts.signatureVerifiedBefore && !jwsSignatureValid(jws, header.alg, key.key))) throw refuse('signature is not valid');

  const problem = registeredClaimsProblem(claims, { issuer: opts.issuer, audience: opts.audience, now: opts.now, tolerance: opts.clockTolerance ?? 5 });
  if (problem) throw refuse(OUR_WORDING[problem.claim](problem.problem));
  return claims;
}
