import { TokenVerificationError } from '../../tokens/token-errors.js';
import type { ExternalJwtVerifier } from '../trusted-issuers.js';
import { AttestationError, type Attestor } from './attestor.js';

/**
 * `jwt`: a JWT from a trusted external issuer (a Kubernetes projected service-account token, a CI
 * system's OIDC token), verified with the issuer's keys; the agent's registration names the claims
 * that must match.
 */
export function jwtAttestor(verifier: ExternalJwtVerifier): Attestor {
  return {
    type: 'jwt',
    async attest(_agent, config, evidence) {
      const token = evidence.attestation.token;
      if (typeof token !== 'string' || !token) throw new AttestationError('attestation.token (the JWT) is required');
      let payload: Record<string, unknown>;
      try {
        payload = await verifier.verify(token, config.issuer as string, 'attestation JWT');
      } catch (err) {
        if (err instanceof TokenVerificationError) throw new AttestationError(err.message);
        throw err;
      }
      for (const [claim, expected] of Object.entries(config.claims as Record<string, unknown>)) {
        if (payload[claim] !== expected) throw new AttestationError(`the attestation JWT ${claim} claim does not match the agent's registration`);
      }
      return { detail: `jwt from ${String(config.issuer)}` };
    },
  };
}
