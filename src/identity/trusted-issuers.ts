import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWK, type JWTVerifyGetKey } from 'jose';
import { parseCompactJws, unverifiedClaims } from '../tokens/compact-jws.js';
import { asVerificationError, TokenVerificationError } from '../tokens/token-errors.js';

/** An external issuer whose JWTs this server accepts, with its keys. */
export interface ExternalIssuer {
  issuer: string;
  jwks_uri?: string;
  jwks?: { keys: Record<string, unknown>[] };
  /** The `aud` its JWTs must carry for us. */
  audience: string | string[];
}

/** Seconds an external JWT is still accepted past its `exp` (clock skew between its issuer and us). */
export const EXTERNAL_CLOCK_TOLERANCE = 5;

/** Asymmetric algorithms accepted from external issuers; `none` and HMAC never. */
const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/** The `iss` a JWT claims, unverified (to pick the issuer whose keys verify it); undefined when unreadable. */
export function claimedIssuer(token: string | undefined): string | undefined {
  const iss = token ? unverifiedClaims(token)?.iss : undefined;
  return typeof iss === 'string' ? iss : undefined;
}

/**
 * Verifies JWTs of configured external issuers (Kubernetes, CI OIDC, identity providers, partner
 * authorization servers): signature with the issuer's JWKS (fetched and cached, refetched on an unknown
 * `kid` with a cool-down) or inline keys, `iss`, `aud`, `exp`, and an asymmetric `alg`.
 */
export class ExternalJwtVerifier {
  private readonly keySets = new Map<string, JWTVerifyGetKey>();

  constructor(private readonly issuers: readonly ExternalIssuer[], private readonly now: () => number) {
    for (const i of issuers) {
      this.keySets.set(i.issuer, i.jwks_uri
        ? createRemoteJWKSet(new URL(i.jwks_uri), { cacheMaxAge: 600_000, cooldownDuration: 30_000, timeoutDuration: 5000 })
        : createLocalJWKSet(i.jwks as { keys: JWK[] }));
    }
  }

  has(issuer: string | undefined): boolean {
    return issuer !== undefined && this.keySets.has(issuer);
  }

  async verify(token: string, issuer: string, what: string, opts: { audience?: string | string[]; requiredClaims?: string[] } = {}): Promise<Record<string, unknown>> {
    const trusted = this.issuers.find((i) => i.issuer === issuer);
    if (!trusted) throw new TokenVerificationError(`the ${what} issuer ${issuer} is not trusted by this server`);
    // Strict base64url segments only: jose's decoder also takes padding and whitespace, and a token re-encoded so
    // would verify while every check that reads its header first (its typ, say) saw no token at all.
    if (!parseCompactJws(token)) throw new TokenVerificationError(`the ${what} is not a compact JWS with base64url segments and JSON header and payload`);
    try {
      const { payload } = await jwtVerify(token, this.keySets.get(issuer)!, {
        issuer,
        audience: opts.audience ?? trusted.audience,
        algorithms: ALGS,
        requiredClaims: ['exp', ...(opts.requiredClaims ?? [])],
        currentDate: new Date(this.now() * 1000),
        clockTolerance: EXTERNAL_CLOCK_TOLERANCE,
      });
      return payload;
    } catch (err) {
      throw asVerificationError(err, what);
    }
  }
}
