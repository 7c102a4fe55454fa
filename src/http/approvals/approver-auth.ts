import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { ApproversRepo } from '../../storage/approvers-repo.js';
import type { Decider } from '../../policy/approvals.js';
import { secretHash } from '../../identity/approver-credential.js';
import { ApiError } from '../errors.js';
import type { AnonymousRefusals } from '../anonymous-refusals.js';

export type DeciderState = { decider?: Decider };

/** Requires `Authorization: Bearer <approver credential>` (or the admin token); the caller is `ctx.state.decider`. */
export function requireApprover(deps: { approvers: ApproversRepo; adminHash: Buffer; anonymous: Pick<AnonymousRefusals, 'refused'> }) {
  return async function approverAuth(ctx: Context, next: Next): Promise<void> {
    const m = /^Bearer ([\x21-\x7E]{1,512})$/i.exec(ctx.get('authorization'));
    let decider: Decider | undefined;
    if (m) {
      if (timingSafeEqual(createHash('sha256').update(m[1]!).digest(), deps.adminHash)) decider = { admin: true };
      else {
        const approver = await deps.approvers.findActiveByCredential(secretHash(m[1]!));
        if (approver) decider = { approverId: approver.id };
      }
    }
    if (!decider) {
      const description = m ? 'the approver credential is not valid' : 'an approver credential is required: Authorization: Bearer <credential>';
      await deps.anonymous.refused(ctx, { decision: 'refused', action: 'approvals', reason: 'invalid_token', detail: description }).catch(() => {});
      ctx.set('WWW-Authenticate', m ? 'Bearer error="invalid_token"' : 'Bearer');
      throw new ApiError(401, 'invalid_token', description);
    }
    (ctx.state as DeciderState).decider = decider;
    await next();
  };
}
