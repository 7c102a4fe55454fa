import { TokenVerificationError } from './token-errors.js';
import { BiscuitLibraryError, retireBiscuitAfterTrap } from './biscuit-wasm.js';

/** Which check refused a Biscuit. */
export type BiscuitFailure =
  | 'malformed' | 'too_large' | 'signature' | 'unknown_root' | 'revoked' | 'expired' | 'depth' | 'context'
  | 'delegator' | 'signer' | 'widened' | 'check' | 'policy' | 'run_limit' | 'request';

/**
 * A Biscuit refused at verification or delegation: `failure` names the check, `block` the block it
 * failed in (0 = authority) when there is one, and `rule` the Datalog check that failed, if any (for a
 * `request` refusal: `tool`, `resource` or `spend`).
 */
export class BiscuitError extends TokenVerificationError {
  constructor(readonly failure: BiscuitFailure, message: string, readonly block?: number, readonly rule?: string) {
    super(block === undefined ? message : `block ${block}: ${message}`);
    this.name = 'BiscuitError';
  }
}

/**
 * Datalog evaluation ran past its time limit. The facts and iterations limits bound what a token can make a
 * verifier do, deterministically; the time limit is only a backstop, which a busy machine (the process waiting
 * for a core, a garbage collection, wasm code compiled at its first use) can exhaust with an honest token. So
 * this is no refusal of the token: it is transient, and the same request may be retried (`retryable`).
 */
export class BiscuitTimeoutError extends Error {
  readonly retryable = true;
  constructor(during: string) {
    super(`Datalog evaluation ran past its time limit (${during}); the token was not refused, try again`);
    this.name = 'BiscuitTimeoutError';
  }
}

interface FailedCheck { Block?: { block_id: number; rule: string }; Authorizer?: { rule: string } }

/**
 * Turns what the wasm library throws (plain objects, which the loader wraps in a {@link BiscuitLibraryError})
 * into a {@link BiscuitError}, or a {@link BiscuitTimeoutError} when only the time limit ran out.
 */
export function fromLibraryError(err: unknown, during: string): BiscuitError | BiscuitTimeoutError {
  if (err instanceof BiscuitError || err instanceof BiscuitTimeoutError) return err;
  retireBiscuitAfterTrap(err);
  const e = ((err instanceof BiscuitLibraryError ? err.value : err) ?? {}) as Record<string, any>;
  if (e.RunLimit === 'Timeout') return new BiscuitTimeoutError(during);
  if (e.Format) {
    const format = e.Format as Record<string, unknown>;
    if (format.Signature || format.InvalidSignatureSize) return new BiscuitError('signature', `the token's signatures do not verify (${during})`);
    return new BiscuitError('malformed', `the token is malformed (${during})`);
  }
  if (e.RunLimit) return new BiscuitError('run_limit', `Datalog evaluation hit its run limit (${String(typeof e.RunLimit === 'string' ? e.RunLimit : Object.keys(e.RunLimit)[0])})`);
  const unauthorized = e.FailedLogic?.Unauthorized as { checks?: FailedCheck[] } | undefined;
  if (unauthorized?.checks?.length) {
    const first = unauthorized.checks[0]!;
    if (first.Block) return new BiscuitError('check', `check failed: ${first.Block.rule}`, first.Block.block_id, first.Block.rule);
    return new BiscuitError('check', `verifier check failed: ${first.Authorizer?.rule ?? 'unknown'}`, undefined, first.Authorizer?.rule);
  }
  if (e.FailedLogic) return new BiscuitError('policy', 'no allow policy of the verifier matched the request');
  if (e.Execution || e.Language || e.InvalidBlockIndex) return new BiscuitError('malformed', `the token could not be evaluated (${during})`);
  return new BiscuitError('malformed', `the token could not be processed (${during})`);
}
