import { decodeProtectedHeader, importJWK, jwtVerify, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { randomId } from './random-id.js';
import { asVerificationError, TokenVerificationError } from './token-errors.js';

/** `typ` of a Client Attestation PoP JWT (draft-ietf-oauth-attestation-based-client-auth). */
export const CLIENT_ATTESTATION_POP_TYP = 'oauth-client-attestation-pop+jwt';
/** How old (by `iat`) a Client Attestation PoP JWT may be, and how long its `jti` is remembered. */
export const CLIENT_ATTESTATION_POP_MAX_AGE = 300;
/** Seconds of clock skew allowed on `iat`, `exp` and `nbf`. */
export const CLIENT_ATTESTATION_POP_CLOCK_TOLERANCE = 5;
const MAX_JTI_LENGTH = 256;

export interface ClientAttestationPopClaims {
  aud: string | string[];
  jti: string;
  iat: number;
  exp?: number;
  iss?: string;
  challenge?: string;
}

/**
 * Creates a Client Attestation PoP JWT for a WIT used as the Client Attestation (draft-ietf-oauth-spiffe-client-auth,
 * WIT-SVID): signed by the key in the WIT's `cnf.jwk`, `aud` the authorization server's issuer identifier.
 */
export async function createClientAttestationPop(opts: {
  key: CryptoKey | KeyObject; alg: string; issuer: string; clientId?: string; now?: number; jti?: string;
}): Promise<string> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  return new SignJWT({ aud: opts.issuer, jti: opts.jti ?? randomId(18), ...(opts.clientId ? { iss: opts.clientId } : {}) })
    .setProtectedHeader({ typ: CLIENT_ATTESTATION_POP_TYP, alg: opts.alg })
    .setIssuedAt(now)
    .sign(opts.key);
}

/**
 * Verifies a Client Attestation PoP JWT against the WIT it accompanies: `typ` {@link CLIENT_ATTESTATION_POP_TYP},
 * signed by the WIT's `cnf.jwk` with its `alg`, `aud` the issuer, a `jti`, an `iat` at most
 * {@link CLIENT_ATTESTATION_POP_MAX_AGE} seconds old and not in the future, `exp` and `nbf` when present, and `iss`,
 * when present (earlier drafts required it), the client's identifier. Replay is the caller's to check with the `jti`.
 */
export async function verifyClientAttestationPop(token: string, opts: {
  witJwk: JWK; clientId: string; issuer: string; now: number; clockTolerance?: number;
}): Promise<ClientAttestationPopClaims> {
  const alg = opts.witJwk.alg!;
  const tolerance = opts.clockTolerance ?? CLIENT_ATTESTATION_POP_CLOCK_TOLERANCE;
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw new TokenVerificationError('the OAuth-Client-Attestation-PoP JWT is malformed');
  }
  if (header.alg !== alg) throw new TokenVerificationError(`the OAuth-Client-Attestation-PoP alg must be the WIT key's alg (${alg})`);
  let payload: Record<string, unknown>;
  try {
    const key = await importJWK(opts.witJwk, alg);
    ({ payload } = await jwtVerify(token, key, {
      typ: CLIENT_ATTESTATION_POP_TYP,
      algorithms: [alg],
      audience: opts.issuer,
      requiredClaims: ['aud', 'jti', 'iat'],
      maxTokenAge: CLIENT_ATTESTATION_POP_MAX_AGE,
      currentDate: new Date(opts.now * 1000),
      clockTolerance: tolerance,
    }));
  } catch (err) {
    throw asVerificationError(err, 'OAuth-Client-Attestation-PoP JWT');
  }
  const claims = payload as unknown as ClientAttestationPopClaims;
  if (claims.iat > opts.now + tolerance) throw new TokenVerificationError('the OAuth-Client-Attestation-PoP JWT is issued in the future');
  if (typeof claims.jti !== 'string' || !claims.jti || claims.jti.length > MAX_JTI_LENGTH) {
    throw new TokenVerificationError(`the OAuth-Client-Attestation-PoP jti must be a string of 1-${MAX_JTI_LENGTH} characters`);
  }
  if (claims.iss !== undefined && claims.iss !== opts.clientId) throw new TokenVerificationError('the OAuth-Client-Attestation-PoP iss is not the WIT\'s subject');
  return claims;
}
