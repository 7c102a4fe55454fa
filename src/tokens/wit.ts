import { randomBytes } from 'node:crypto';
import { calculateJwkThumbprint, errors as joseErrors, jwtVerify, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import type { NewTokenRecord } from '../storage/tokens-repo.js';
import { tokenHash } from './token-hash.js';
import { TokenVerificationError } from './token-errors.js';

export const WIT_TYP = 'wit+jwt';
export const WIT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:wit';
/** Algorithms an agent key bound in a WIT may use. */
export const AGENT_KEY_ALGS = ['EdDSA', 'ES256'] as const;

export interface WitClaims {
  iss: string;
  sub: string;
  iat: number;
  exp: number;
  jti: string;
  cnf: { jwk: JWK };
  agent_checksum?: string;
}

export interface Signer {
  kid: string;
  alg: string;
  key: KeyObject | CryptoKey;
}

/** Only the public members of an agent's JWK, with its `alg`. */
export function publicAgentJwk(jwk: JWK): JWK {
  const { kty, crv, x, y, alg } = jwk;
  return Object.fromEntries(Object.entries({ kty, crv, x, y, alg }).filter(([, v]) => v !== undefined)) as JWK;
}

/** Mints a Workload Identity Token (draft-ietf-wimse-workload-creds) and its record. */
export async function mintWit(opts: {
  issuer: string; subject: string; agentJwk: JWK; ttl: number; now: number; signer: Signer; agentChecksum?: string; parentJti?: string;
}): Promise<{ token: string; claims: WitClaims; record: NewTokenRecord }> {
  const jwk = publicAgentJwk(opts.agentJwk);
  const claims: WitClaims = {
    iss: opts.issuer,
    sub: opts.subject,
    iat: opts.now,
    exp: opts.now + opts.ttl,
    jti: randomBytes(24).toString('base64url'),
    cnf: { jwk },
    ...(opts.agentChecksum ? { agent_checksum: opts.agentChecksum } : {}),
  };
  const token = await new SignJWT({ ...claims }).setProtectedHeader({ typ: WIT_TYP, alg: opts.signer.alg, kid: opts.signer.kid }).sign(opts.signer.key);
  const record: NewTokenRecord = {
    jti: claims.jti,
    type: 'wit',
    sub: claims.sub,
    client_id: claims.sub,
    actor: null,
    parent_jti: opts.parentJti ?? null,
    txn: null,
    scope: null,
    audience: [],
    kid: opts.signer.kid,
    iat: claims.iat,
    exp: claims.exp,
    token_hash: tokenHash(token),
    cnf_jkt: await calculateJwkThumbprint(jwk),
  };
  return { token, claims, record };
}

export type KeyResolver = (kid: string | undefined) => Promise<KeyObject | CryptoKey | JWK | undefined>;

/**
 * Verifies a WIT's signature and claims: `typ: wit+jwt` (so no other token type passes as a WIT),
 * our issuer, an asymmetric algorithm, unexpired, and a `cnf.jwk` with an `alg` we support.
 */
export async function verifyWit(token: string, opts: { issuer: string; keyFor: KeyResolver; now: number; clockTolerance?: number }): Promise<WitClaims> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, async (header) => {
      const key = await opts.keyFor(header.kid);
      if (!key) throw new TokenVerificationError('the WIT is not signed by a key of this server');
      return key as KeyObject;
    }, {
      typ: WIT_TYP,
      issuer: opts.issuer,
      algorithms: ['EdDSA', 'ES256'],
      requiredClaims: ['sub', 'exp', 'iat', 'jti'],
      currentDate: new Date(opts.now * 1000),
      clockTolerance: opts.clockTolerance ?? 5,
    }));
  } catch (err) {
    throw asVerificationError(err, 'WIT');
  }
  const cnf = payload.cnf as { jwk?: JWK } | undefined;
  if (!cnf?.jwk || typeof cnf.jwk !== 'object') throw new TokenVerificationError('the WIT has no cnf.jwk');
  if (!AGENT_KEY_ALGS.includes(cnf.jwk.alg as (typeof AGENT_KEY_ALGS)[number])) throw new TokenVerificationError('the WIT cnf.jwk has no supported alg');
  return payload as unknown as WitClaims;
}

/** Maps jose's errors to a short reason. */
export function asVerificationError(err: unknown, what: string): TokenVerificationError {
  if (err instanceof TokenVerificationError) return err;
  if (err instanceof joseErrors.JWTExpired) return new TokenVerificationError(`the ${what} has expired`);
  if (err instanceof joseErrors.JWTClaimValidationFailed) return new TokenVerificationError(`the ${what} ${err.claim} claim is not valid (${err.reason})`);
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new TokenVerificationError(`the ${what} alg is not allowed`);
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenVerificationError(`the ${what} signature is not valid`);
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return new TokenVerificationError(`the ${what} is malformed`);
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new TokenVerificationError(`the ${what} is signed by an unknown key`);
  return new TokenVerificationError(`the ${what} could not be verified`);
}
