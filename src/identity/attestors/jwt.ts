import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JWK, type JWTVerifyGetKey } from 'jose';
import type { TrustedIssuer } from '../../config/config.js';
import { asVerificationError } from '../../tokens/token-errors.js';
import { AttestationError, type Attestor } from './attestor.js';

/** Asymmetric algorithms accepted for attestation JWTs; `none` and HMAC never. */
const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/**
 * `jwt`: a JWT from a trusted external issuer (a Kubernetes projected service-account token, a CI
 * system's OIDC token), verified with the issuer's JWKS (fetched and cached) or inline keys; the
 * agent's registration names the claims that must match.
 */
export function jwtAttestor(issuers: readonly TrustedIssuer[], now: () => number): Attestor {
  const keySets = new Map<string, JWTVerifyGetKey>();
  for (const i of issuers) {
    keySets.set(i.issuer, i.jwks_uri
      ? createRemoteJWKSet(new URL(i.jwks_uri), { cacheMaxAge: 600_000, cooldownDuration: 30_000, timeoutDuration: 5000 })
      : createLocalJWKSet(i.jwks as { keys: JWK[] }));
  }
  return {
    type: 'jwt',
    async attest(agent, config, evidence) {
      const token = evidence.attestation.token;
      if (typeof token !== 'string' || !token) throw new AttestationError('attestation.token (the JWT) is required');
      const trusted = issuers.find((i) => i.issuer === config.issuer);
      if (!trusted) throw new AttestationError(`the issuer ${String(config.issuer)} is not trusted by this server`);
      let payload: Record<string, unknown>;
      try {
        ({ payload } = await jwtVerify(token, keySets.get(trusted.issuer)!, {
          issuer: trusted.issuer,
          audience: trusted.audience,
          algorithms: ALGS,
          requiredClaims: ['exp'],
          currentDate: new Date(now() * 1000),
          clockTolerance: 5,
        }));
      } catch (err) {
        throw new AttestationError(asVerificationError(err, 'attestation JWT').message);
      }
      for (const [claim, expected] of Object.entries(config.claims as Record<string, unknown>)) {
        if (payload[claim] !== expected) throw new AttestationError(`the attestation JWT ${claim} claim does not match the agent's registration`);
      }
      return { detail: `jwt from ${trusted.issuer}` };
    },
  };
}
