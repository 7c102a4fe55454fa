import { randomBytes } from 'node:crypto';
import type { JoinTokensRepo } from '../../storage/join-tokens-repo.js';
import { tokenHash } from '../../tokens/token-hash.js';
import { AttestationError, type Attestor } from './attestor.js';

const REASONS = {
  unknown: 'the join token is not known',
  used: 'the join token was already used',
  expired: 'the join token has expired',
  other_agent: 'the join token was issued for another agent',
} as const;

/** A new join token for an agent: 256 random bits, stored by hash. */
export async function createJoinToken(repo: JoinTokensRepo, agentId: string, expiresAt: number): Promise<string> {
  const token = `ajt_${randomBytes(32).toString('base64url')}`;
  await repo.insert(tokenHash(token), agentId, expiresAt);
  return token;
}

/** `join_token`: a one-time, short-lived bootstrap token from the admin API, bound to one agent. */
export function joinTokenAttestor(repo: JoinTokensRepo, now: () => number): Attestor {
  return {
    type: 'join_token',
    async attest(agent, _config, evidence) {
      const token = evidence.attestation.token;
      if (typeof token !== 'string' || !token) throw new AttestationError('attestation.token (the join token) is required');
      const result = await repo.redeem(tokenHash(token), agent.id, now());
      if (!result.ok) throw new AttestationError(REASONS[result.reason]);
      return { detail: 'join token redeemed' };
    },
  };
}
