import { jwtVerify, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { asVerificationError, TokenVerificationError } from './token-errors.js';

/** The server key a token is signed with. */
export interface Signer {
  kid: string;
  alg: string;
  key: KeyObject | CryptoKey;
}

/** Finds a published server key by `kid`. */
export type KeyResolver = (kid: string | undefined) => Promise<KeyObject | CryptoKey | JWK | undefined>;

/** The algorithms our own tokens are signed with; nothing else (no `none`, no HMAC) verifies. */
export const SERVER_ALGS = ['EdDSA', 'ES256'];

export function signJwt(typ: string, claims: Record<string, unknown>, signer: Signer): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ typ, alg: signer.alg, kid: signer.kid }).sign(signer.key);
}

/**
 * Verifies a JWT this server signed: one of our published keys, `typ` exactly as given (so no other
 * token type passes for this one), our issuer, unexpired, with `jti`, `iat` and `exp`.
 */
export async function verifyOurJwt(token: string, opts: {
  typ: string; what: string; issuer: string; keyFor: KeyResolver; now: number; audience?: string; clockTolerance?: number;
}): Promise<Record<string, unknown>> {
  try {
    const { payload } = await jwtVerify(token, async (header) => {
      const key = await opts.keyFor(header.kid);
      if (!key) throw new TokenVerificationError(`the ${opts.what} is not signed by a key of this server`);
      return key as KeyObject;
    }, {
      typ: opts.typ,
      issuer: opts.issuer,
      ...(opts.audience ? { audience: opts.audience } : {}),
      algorithms: SERVER_ALGS,
      requiredClaims: ['sub', 'exp', 'iat', 'jti'],
      currentDate: new Date(opts.now * 1000),
      clockTolerance: opts.clockTolerance ?? 5,
    });
    return payload;
  } catch (err) {
    throw asVerificationError(err, opts.what);
  }
}
