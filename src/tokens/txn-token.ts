import { randomId } from './random-id.js';
import type { NewTokenRecord } from '../storage/tokens-repo.js';
import { signJwt, type Signer } from './our-jwt.js';
import { tokenHash } from './token-hash.js';
import type { ActClaim } from './access-token.js';
import { normalizeTyp, parseCompactJws } from './compact-jws.js';

export const TXN_TOKEN_TYP = 'txntoken+jwt';
export const TXN_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:txn_token';

/** Whether a JWT, whoever signed it, says it is a Txn-Token (its `typ`, read as RFC 7515 allows); not verified. */
export const claimsTxnTokenTyp = (token: string) => normalizeTyp(parseCompactJws(token)?.header.typ) === TXN_TOKEN_TYP;

/** Transaction Token claims (draft-ietf-oauth-transaction-tokens). */
export interface TxnTokenClaims {
  iss: string;
  iat: number;
  exp: number;
  aud: string;
  jti: string;
  txn: string;
  sub: string;
  scope?: string;
  req_wl: string;
  /** The call chain (RFC 8693 `act`): the requesting workload outermost, then those before it. */
  act?: ActClaim;
  tctx?: Record<string, unknown>;
  rctx?: Record<string, unknown>;
}

/** A new transaction id. */
export const newTxn = () => randomId(16);

/** Mints a Txn-Token and its record. The inbound token is never embedded. */
export async function mintTxnToken(opts: {
  issuer: string; trustDomain: string; txn: string; subject: string; scope?: string; requester: string; act?: ActClaim;
  tctx?: Record<string, unknown>; rctx?: Record<string, unknown>; now: number; exp: number; signer: Signer; parentJti: string | null;
}): Promise<{ token: string; claims: TxnTokenClaims; record: NewTokenRecord }> {
  const claims: TxnTokenClaims = {
    iss: opts.issuer,
    iat: opts.now,
    exp: opts.exp,
    aud: opts.trustDomain,
    jti: randomId(24),
    txn: opts.txn,
    sub: opts.subject,
    ...(opts.scope ? { scope: opts.scope } : {}),
    req_wl: opts.requester,
    ...(opts.act ? { act: opts.act } : {}),
    ...(opts.tctx && Object.keys(opts.tctx).length ? { tctx: opts.tctx } : {}),
    ...(opts.rctx && Object.keys(opts.rctx).length ? { rctx: opts.rctx } : {}),
  };
  const token = await signJwt(TXN_TOKEN_TYP, { ...claims }, opts.signer);
  return {
    token,
    claims,
    record: {
      jti: claims.jti, type: 'txn_token', sub: claims.sub, client_id: opts.requester, actor: opts.act ?? null, parent_jti: opts.parentJti,
      txn: claims.txn, scope: claims.scope ?? null, audience: [claims.aud], kid: opts.signer.kid,
      iat: claims.iat, exp: claims.exp, token_hash: tokenHash(token), cnf_jkt: null,
    },
  };
}

/** `request_context` / `request_details`: a JSON object, plain or base64url-encoded. Undefined when malformed. */
export function parseContextParam(value: string): Record<string, unknown> | undefined {
  for (const text of [value, Buffer.from(value, 'base64url').toString('utf8')]) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
    } catch { /* try the next form */ }
  }
  return undefined;
}
