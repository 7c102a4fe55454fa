import type { KeyManager } from '../../keys/key-manager.js';
import type { ParentCheck, TokenRecord, TokensRepo } from '../../storage/tokens-repo.js';
import { ACCESS_TOKEN_TYP } from '../../tokens/access-token.js';
import { verifyOurJwt } from '../../tokens/our-jwt.js';
import { TokenVerificationError } from '../../tokens/token-errors.js';
import { tokenHash } from '../../tokens/token-hash.js';
import { TXN_TOKEN_TYP } from '../../tokens/txn-token.js';
import { WIT_TYP } from '../../tokens/wit.js';

export type IssuedKind = 'access_token' | 'txn_token' | 'wit';

const TYP: Record<IssuedKind, { typ: string; what: string }> = {
  access_token: { typ: ACCESS_TOKEN_TYP, what: 'access token' },
  txn_token: { typ: TXN_TOKEN_TYP, what: 'Txn-Token' },
  wit: { typ: WIT_TYP, what: 'WIT' },
};

export interface IssuedToken {
  kind: IssuedKind;
  claims: Record<string, unknown>;
  record: TokenRecord;
  /** Checked again as the record of a token issued for this one is written. */
  recordCheck: VerifiedClaims['recordCheck'];
}

/**
 * A token of ours whose signature and claims are verified, and whose record is still to be checked:
 * `recordCheck` goes with the record of the token issued in exchange for it, and that record is inserted
 * only if the check passes (see {@link IssuedTokenVerifier.refusal} for why it failed).
 */
export interface VerifiedClaims {
  kind: IssuedKind;
  claims: Record<string, unknown>;
  recordCheck: ParentCheck & { what: string };
}

/**
 * Verifies a token this server issued, presented back to it (a subject or actor token): signature
 * with one of our published keys, exactly the expected `typ` (an access token never passes for a
 * Txn-Token, nor the other way round), our issuer, unexpired, recorded with this very hash, not revoked,
 * and its agent still active.
 */
export class IssuedTokenVerifier {
  /**
   * Hashes of tokens whose signature this process has checked, newest last (a bounded set): a subject token
   * presented again (an orchestrator exchanging one token for each of its calls) skips the signature
   * operation, the costliest step. Only exact bytes that passed are remembered; claims, key, record and
   * agent are checked every time.
   */
  private readonly verified = new Map<string, true>();

  constructor(private readonly deps: { issuer: string; trustDomain: string; keys: KeyManager; tokens: TokensRepo; now: () => number; rememberVerified?: number }) {}

  /** Every check, the record's included, now. */
  async verify(token: string, kind: IssuedKind): Promise<IssuedToken> {
    const { claims, recordCheck } = await this.verifyClaims(token, kind);
    // The record and its agent's status in one query, read now (not cached): a revoked token or a disabled agent is refused at once.
    const found = await this.deps.tokens.findWithAgentStatus(recordCheck.jti);
    const why = refusalOf(found, recordCheck);
    if (why) throw new TokenVerificationError(why);
    return { kind, claims, record: found!.record, recordCheck };
  }

  /**
   * The signature and claims only. The caller must make the record check part of inserting the record of
   * what it issues in exchange (one query per batch of records instead of one per request): nothing leaves
   * unless the presented token is recorded with this hash, not revoked, and its agent active when the new
   * record is written.
   */
  async verifyClaims(token: string, kind: IssuedKind): Promise<VerifiedClaims> {
    const { typ, what } = TYP[kind];
    const hash = tokenHash(token);
    const claims = await verifyOurJwt(token, {
      typ, what, issuer: this.deps.issuer, keyFor: (kid) => this.deps.keys.verificationKey(kid), now: this.deps.now(),
      ...(kind === 'txn_token' ? { audience: this.deps.trustDomain } : {}),
      signatureVerifiedBefore: this.verified.has(hash),
    });
    this.remember(hash);
    return { kind, claims, recordCheck: { jti: claims.jti as string, hash, what } };
  }

  /** Why a deferred record check failed (read again now), or undefined when it passes now. */
  async refusal(check: VerifiedClaims['recordCheck']): Promise<string | undefined> {
    return refusalOf(await this.deps.tokens.findWithAgentStatus(check.jti), check);
  }

  private remember(hash: string): void {
    this.verified.delete(hash);
    this.verified.set(hash, true);
    if (this.verified.size > (this.deps.rememberVerified ?? 10_000)) this.verified.delete(this.verified.keys().next().value!);
  }
}

function refusalOf(found: { record: TokenRecord; agentStatus: string | undefined } | undefined, check: VerifiedClaims['recordCheck']): string | undefined {
  if (!found || (check.hash !== undefined && found.record.token_hash !== check.hash)) return `the ${check.what} was not issued by this server`;
  if (found.record.revoked_at) return `the ${check.what} has been revoked`;
  if (found.agentStatus !== 'active') return `the ${check.what} was issued to an agent that is no longer active`;
  return undefined;
}
