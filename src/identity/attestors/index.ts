import type { JoinTokensRepo } from '../../storage/join-tokens-repo.js';
import type { WorkloadAuthenticator } from '../workload-authenticator.js';
import type { ExternalJwtVerifier } from '../trusted-issuers.js';
import type { Attestor } from './attestor.js';
import { joinTokenAttestor } from './join-token.js';
import { jwtAttestor } from './jwt.js';
import { witAttestor } from './wit.js';

/** Every attestor this server offers, by type. */
export function createAttestors(deps: {
  joinTokens: JoinTokensRepo; trustedIssuers: ExternalJwtVerifier; authenticator: WorkloadAuthenticator; witEndpoint: string; now: () => number;
}): Map<string, Attestor> {
  const list = [
    joinTokenAttestor(deps.joinTokens, deps.now),
    jwtAttestor(deps.trustedIssuers),
    witAttestor(deps.authenticator, deps.witEndpoint),
  ];
  return new Map(list.map((a) => [a.type, a]));
}
