import type { WorkloadAuthenticator } from '../workload-authenticator.js';
import { TokenVerificationError } from '../../tokens/token-errors.js';
import { AttestationError, type Attestor } from './attestor.js';

/** `wit`: renewal (and key rotation) with a still-valid WIT and a WPT signed by its key, aimed at the WIT endpoint. */
export function witAttestor(authenticator: WorkloadAuthenticator, witEndpoint: string): Attestor {
  return {
    type: 'wit',
    async attest(agent, _config, evidence) {
      if (!evidence.wit || !evidence.wpt) throw new AttestationError('renewal needs the Workload-Identity-Token and Workload-Proof-Token headers');
      let claims;
      try {
        ({ claims } = await authenticator.authenticate({ wit: evidence.wit, wpt: evidence.wpt, audience: witEndpoint }));
      } catch (err) {
        if (err instanceof TokenVerificationError) throw new AttestationError(err.message);
        throw err;
      }
      if (claims.sub !== agent.id) throw new AttestationError('the WIT is for another agent');
      return { detail: `renewed WIT ${claims.jti}`, renews: claims.jti, ...(claims.agent_checksum ? { agentChecksum: claims.agent_checksum } : {}) };
    },
  };
}
