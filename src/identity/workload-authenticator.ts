import type { KeyManager } from '../keys/key-manager.js';
import type { AgentRecord, AgentsRepo } from '../storage/agents-repo.js';
import type { ReplayRepo } from '../storage/replay-repo.js';
import type { TokensRepo } from '../storage/tokens-repo.js';
import { TokenVerificationError } from '../tokens/token-errors.js';
import { tokenHash } from '../tokens/token-hash.js';
import { verifyWit, type WitClaims } from '../tokens/wit.js';
import { verifyWpt, WPT_CLOCK_TOLERANCE, type WptClaims } from '../tokens/wpt.js';
import { CLIENT_ATTESTATION_POP_CLOCK_TOLERANCE, CLIENT_ATTESTATION_POP_MAX_AGE, verifyClientAttestationPop, type ClientAttestationPopClaims } from '../tokens/client-attestation-pop.js';

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
    const { claims, agent, jkt } = await this.verifyWit(req.wit, now);
    const wpt = await verifyWpt(req.wpt, {
      wit: req.wit, witJwk: claims.cnf.jwk, audience: req.audience, now, accessToken: req.accessToken, txnToken: req.txnToken,
      clockTolerance: WPT_CLOCK_TOLERANCE,
    });
    if (!(await this.deps.replay.claim(`wpt ${claims.sub}`, wpt.jti, wpt.exp + WPT_CLOCK_TOLERANCE))) throw new TokenVerificationError('the WPT was already used');
    return { claims, wpt, agent, jkt };
  }

  /**
   * Authenticates a client by its WIT as the Client Attestation and a Client Attestation PoP JWT
   * (draft-ietf-oauth-attestation-based-client-auth as profiled for WITs by draft-ietf-oauth-spiffe-client-auth):
   * the WIT as in {@link authenticate}, the PoP signed by its key for this server (`aud` the issuer), used once.
   */
  async authenticateAttestation(req: { wit: string; pop: string }): Promise<Omit<WorkloadAuthentication, 'wpt'> & { pop: ClientAttestationPopClaims }> {
    const now = this.deps.now();
    const { claims, agent, jkt } = await this.verifyWit(req.wit, now);
    const pop = await verifyClientAttestationPop(req.pop, { witJwk: claims.cnf.jwk, clientId: claims.sub, issuer: this.deps.issuer, now });
    // Remembered for as long as a PoP of that iat is accepted (its exp, when later, is bounded by the same age).
    if (!(await this.deps.replay.claim(`attestation-pop ${claims.sub}`, pop.jti, pop.iat + CLIENT_ATTESTATION_POP_MAX_AGE + CLIENT_ATTESTATION_POP_CLOCK_TOLERANCE))) {
      throw new TokenVerificationError('the OAuth-Client-Attestation-PoP JWT was already used');
    }
    return { claims, pop, agent, jkt };
  }

  /** The WIT is ours, recorded, not revoked, unexpired, and its agent active. */
  private async verifyWit(wit: string, now: number): Promise<{ claims: WitClaims; agent: AgentRecord; jkt: string }> {
    const claims = await verifyWit(wit, { issuer: this.deps.issuer, keyFor: (kid) => this.deps.keys.verificationKey(kid), now });
    const record = await this.deps.tokens.find(claims.jti);
    if (!record || record.type !== 'wit' || record.token_hash !== tokenHash(wit)) throw new TokenVerificationError('the WIT was not issued by this server');
    if (record.revoked_at) throw new TokenVerificationError('the WIT has been revoked');
    const agent = await this.deps.agents.find(claims.sub);
    if (agent?.status !== 'active') throw new TokenVerificationError('the WIT\'s agent is not active');
    return { claims, agent, jkt: record.cnf_jkt! };
  }
}
