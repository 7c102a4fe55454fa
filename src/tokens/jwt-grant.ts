import { randomId } from './random-id.js';
import type { NewTokenRecord } from '../storage/tokens-repo.js';
import type { ActClaim } from './access-token.js';
import { signJwt, type Signer } from './our-jwt.js';
import { tokenHash } from './token-hash.js';

export const JWT_GRANT_TYP = 'JWT';
/** How long a JWT authorization grant for a partner lives. */
export const JWT_GRANT_TTL = 60;

/**
 * A JWT authorization grant (RFC 7523) for a partner domain's authorization server, issued by token
 * exchange (draft-ietf-oauth-identity-chaining): `aud` is the partner, `sub` the subject, short-lived.
 */
export async function mintJwtGrant(opts: {
  issuer: string; subject: string; clientId: string; audience: string; scope?: string; act?: ActClaim; now: number; exp: number;
  signer: Signer; parentJti: string | null; txn?: string;
}): Promise<{ token: string; record: NewTokenRecord }> {
  const claims = {
    iss: opts.issuer,
    sub: opts.subject,
    aud: opts.audience,
    client_id: opts.clientId,
    iat: opts.now,
    exp: opts.exp,
    jti: randomId(24),
    ...(opts.scope ? { scope: opts.scope } : {}),
    ...(opts.act ? { act: opts.act } : {}),
  };
  const token = await signJwt(JWT_GRANT_TYP, claims, opts.signer);
  return {
    token,
    record: {
      jti: claims.jti, type: 'jwt_grant', sub: claims.sub, client_id: opts.clientId, actor: opts.act ?? null, parent_jti: opts.parentJti,
      txn: opts.txn ?? null, scope: opts.scope ?? null, audience: [opts.audience], kid: opts.signer.kid, iat: claims.iat, exp: claims.exp,
      token_hash: tokenHash(token), cnf_jkt: null,
    },
  };
}
