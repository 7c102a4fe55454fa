import type { KeyObject, webcrypto } from 'node:crypto';
import { asKeyObject, jwsSignatureValid, normalizeTyp, parseCompactJws, signCompactJws } from './compact-jws.js';
import { TokenVerificationError } from './token-errors.js';

/** The server key a token is signed with. */
export interface Signer {
  kid: string;
  alg: string;
  key: KeyObject | webcrypto.CryptoKey;
}

/** Finds a published server JWT signing key, and the algorithm it signs with, by `kid`. */
export type KeyResolver = (kid: string | undefined) => Promise<{ key: KeyObject; alg: string } | undefined>;

/** The algorithms our own tokens are signed with; nothing else (no `none`, no HMAC) verifies. */
export const SERVER_ALGS = ['EdDSA', 'ES256'];

export async function signJwt(typ: string, claims: Record<string, unknown>, signer: Signer): Promise<string> {
  return signCompactJws({ typ, alg: signer.alg, kid: signer.kid }, claims, asKeyObject(signer.key));
}

/**
 * Verifies a JWT this server signed: one of our published keys with the algorithm it is published for,
 * `typ` exactly as given (so no other token type passes for this one), our issuer, unexpired and already
 * valid (`nbf`), with `sub`, `jti`, `iat` and `exp`.
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

  const tolerance = opts.clockTolerance ?? 5;
  for (const claim of ['sub', 'jti'] as const) {
    if (typeof claims[claim] !== 'string') throw refuse(`${claim} claim is not valid (missing)`);
  }
  for (const claim of ['exp', 'iat'] as const) {
    if (typeof claims[claim] !== 'number' || !Number.isFinite(claims[claim])) throw refuse(`${claim} claim is not valid (missing)`);
  }
  if (claims.iss !== opts.issuer) throw refuse('iss claim is not valid (unexpected "iss" claim value)');
  if (opts.audience !== undefined) {
    const aud = claims.aud;
    if (!(aud === opts.audience || (Array.isArray(aud) && aud.includes(opts.audience)))) throw refuse('aud claim is not valid (unexpected "aud" claim value)');
  }
  if ((claims.exp as number) <= opts.now - tolerance) throw refuse('has expired');
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf > opts.now + tolerance)) throw refuse('nbf claim is not valid (not yet valid)');
  return claims;
}
