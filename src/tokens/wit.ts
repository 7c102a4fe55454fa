import { randomId } from './random-id.js';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { NewTokenRecord } from '../storage/tokens-repo.js';
import { tokenHash } from './token-hash.js';
import { TokenVerificationError } from './token-errors.js';
import { signJwt, verifyOurJwt, type KeyResolver, type Signer } from './our-jwt.js';

export type { KeyResolver, Signer };

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
    jti: randomId(24),
    cnf: { jwk },
    ...(opts.agentChecksum ? { agent_checksum: opts.agentChecksum } : {}),
  };
  const token = await signJwt(WIT_TYP, { ...claims }, opts.signer);
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

/**
 * Verifies a WIT's signature and claims: `typ: wit+jwt` (so no other token type passes as a WIT),
 * our issuer, an asymmetric algorithm, unexpired, and a `cnf.jwk` with an `alg` we support.
 */
export async function verifyWit(token: string, opts: { issuer: string; keyFor: KeyResolver; now: number; clockTolerance?: number }): Promise<WitClaims> {
  const payload = await verifyOurJwt(token, { ...opts, typ: WIT_TYP, what: 'WIT' });
  const cnf = payload.cnf as { jwk?: JWK } | undefined;
  if (!cnf?.jwk || typeof cnf.jwk !== 'object') throw new TokenVerificationError('the WIT has no cnf.jwk');
  if (!AGENT_KEY_ALGS.includes(cnf.jwk.alg as (typeof AGENT_KEY_ALGS)[number])) throw new TokenVerificationError('the WIT cnf.jwk has no supported alg');
  return payload as unknown as WitClaims;
}
