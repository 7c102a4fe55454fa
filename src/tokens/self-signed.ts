import { decodeProtectedHeader, importJWK, jwtVerify, type JWK } from 'jose';
import { normalizeTyp } from './compact-jws.js';
import { asVerificationError, TokenVerificationError } from './token-errors.js';

/** draft-ietf-oauth-transaction-tokens: a JWT a workload signs itself, as the subject of a Txn-Token request. */
export const SELF_SIGNED_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:self_signed';
/** The longest a self-signed subject token may live (`exp` - `iat`), and how far ahead its `exp` may be. */
export const SELF_SIGNED_MAX_LIFETIME = 300;
/** Clock tolerance for `iat` and `exp`, as for every other JWT this server accepts. */
export const SELF_SIGNED_CLOCK_TOLERANCE = 5;

const ALGS = ['EdDSA', 'Ed25519', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512'];
/** Our own token types (and DPoP proofs, WPTs, ID-JAGs) never pass for a self-signed subject token. */
const FOREIGN_TYPS = new Set(['at+jwt', 'txntoken+jwt', 'wit+jwt', 'wpt+jwt', 'dpop+jwt', 'oauth-id-jag+jwt', 'logout+jwt', 'secevent+jwt']);

export interface SelfSignedClaims extends Record<string, unknown> {
  iss: string;
  sub: string;
  iat: number;
  exp: number;
  jti: string;
}

/**
 * Verifies a self-signed subject token: signed by one of the requesting workload's keys (its WIT's key, or
 * the keys it registered for private_key_jwt), `iss` and `sub` the workload itself, `aud` this server's
 * issuer, `iat` not in the future, `exp` at most {@link SELF_SIGNED_MAX_LIFETIME} seconds after `iat` and
 * from now, and a `jti` (whose single use is the caller's to enforce, until `exp` plus the tolerance).
 */
export async function verifySelfSigned(token: string, opts: { workload: string; keys: readonly JWK[]; issuer: string; now: number }): Promise<SelfSignedClaims> {
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw new TokenVerificationError('the self-signed subject token is malformed');
  }
  if (typeof header.alg !== 'string' || !ALGS.includes(header.alg)) throw new TokenVerificationError('the self-signed subject token must be signed with an asymmetric algorithm');
  if (FOREIGN_TYPS.has(normalizeTyp(header.typ) ?? '')) throw new TokenVerificationError(`a ${header.typ} token is not a self-signed subject token`);
  const candidates = opts.keys.filter((k) => (header.kid === undefined || k.kid === header.kid) && (k.alg === undefined || k.alg === header.alg) && !('d' in k));
  if (!candidates.length) throw new TokenVerificationError('the self-signed subject token is not signed by a key registered for this workload');
  let payload: Record<string, unknown> | undefined;
  let failure: unknown;
  for (const jwk of candidates) {
    try {
      const key = await importJWK(jwk, header.alg);
      ({ payload } = await jwtVerify(token, key, {
        algorithms: [header.alg], issuer: opts.workload, subject: opts.workload, audience: opts.issuer,
        requiredClaims: ['iat', 'exp', 'jti'], currentDate: new Date(opts.now * 1000), clockTolerance: SELF_SIGNED_CLOCK_TOLERANCE,
      }));
      break;
    } catch (err) {
      failure = err;
    }
  }
  if (!payload) throw asVerificationError(failure, 'self-signed subject token');
  const { iat, exp, jti } = payload;
  if (typeof iat !== 'number' || typeof exp !== 'number') throw new TokenVerificationError('the self-signed subject token needs numeric iat and exp');
  if (iat > opts.now + SELF_SIGNED_CLOCK_TOLERANCE) throw new TokenVerificationError('the self-signed subject token was issued in the future');
  if (exp - iat > SELF_SIGNED_MAX_LIFETIME || exp > opts.now + SELF_SIGNED_MAX_LIFETIME) {
    throw new TokenVerificationError(`the self-signed subject token may live at most ${SELF_SIGNED_MAX_LIFETIME} seconds`);
  }
  if (typeof jti !== 'string' || !jti || jti.length > 256) throw new TokenVerificationError('the self-signed subject token needs a jti (at most 256 characters)');
  return payload as SelfSignedClaims;
}
