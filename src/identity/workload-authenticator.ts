import type { KeyManager } from '../keys/key-manager.js';
import type { AgentRecord, AgentsRepo } from '../storage/agents-repo.js';
import type { ReplayRepo } from '../storage/replay-repo.js';
import type { TokensRepo } from '../storage/tokens-repo.js';
import { TokenVerificationError } from '../tokens/token-errors.js';
import { tokenHash } from '../tokens/token-hash.js';
import { verifyWit, type WitClaims } from '../tokens/wit.js';
import { verifyWpt, WPT_CLOCK_TOLERANCE, type WptClaims } from '../tokens/wpt.js';

export interface WorkloadAuthentication {
  claims: WitClaims;
  wpt: WptClaims;
  agent: AgentRecord;
  /** RFC 7638 thumbprint of the WIT's key. */
  jkt: string;
}

/**
 * Authenticates a workload by its WIT and a WPT for one request: the WIT is ours, recorded, not revoked,
 * unexpired and its agent active; the WPT is signed by the WIT's key, for this target, and used once
 * (its `jti` is claimed in the shared replay cache, which outlives restarts and spans servers, for as long
 * as the WPT can be accepted: its `exp` plus the clock tolerance).
 */
export class WorkloadAuthenticator {
  constructor(private readonly deps: {
    issuer: string; keys: KeyManager; tokens: TokensRepo; agents: AgentsRepo; replay: ReplayRepo; now: () => number;
  }) {}

  async authenticate(req: { wit: string; wpt: string; audience: string; accessToken?: string; txnToken?: string }): Promise<WorkloadAuthentication> {
    const now = this.deps.now();
    const claims = await verifyWit(req.wit, { issuer: this.deps.issuer, keyFor: (kid) => this.deps.keys.verificationKey(kid), now });
    const record = await this.deps.tokens.find(claims.jti);
    if (!record || record.type !== 'wit' || record.token_hash !== tokenHash(req.wit)) throw new TokenVerificationError('the WIT was not issued by this server');
    if (record.revoked_at) throw new TokenVerificationError('the WIT has been revoked');
    const agent = await this.deps.agents.find(claims.sub);
    if (agent?.status !== 'active') throw new TokenVerificationError('the WIT\'s agent is not active');
    const wpt = await verifyWpt(req.wpt, {
      wit: req.wit, witJwk: claims.cnf.jwk, audience: req.audience, now, accessToken: req.accessToken, txnToken: req.txnToken,
      clockTolerance: WPT_CLOCK_TOLERANCE,
    });
    if (!(await this.deps.replay.claim(`wpt ${claims.sub}`, wpt.jti, wpt.exp + WPT_CLOCK_TOLERANCE))) throw new TokenVerificationError('the WPT was already used');
    return { claims, wpt, agent, jkt: record.cnf_jkt! };
  }
}
