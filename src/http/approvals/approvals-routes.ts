import Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type { ApprovalsRepo } from '../../storage/approvals-repo.js';
import type { ApprovalDecisions } from '../../oauth/approval-decisions.js';
import { ApprovalRefusal, readDecisionBody, type Decider } from '../../policy/approvals.js';
import { ApiError } from '../errors.js';
import { optionalJsonBody } from '../admin/json-body.js';
import type { DeciderState } from './approver-auth.js';

const decider = (ctx: Context): Decider => (ctx.state as DeciderState).decider!;

async function answering<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    if (err instanceof ApprovalRefusal) throw new ApiError(err.status, err.code, err.message);
    throw err;
  }
}

/**
 * The approver API: an approver lists the approvals asked of it and approves or denies them; the admin token
 * sees and decides any.
 */
export function approvalsRoutes(deps: { approvals: ApprovalsRepo; decisions: ApprovalDecisions; auth: Middleware; now: () => number }): Router {
  const router = new Router();

  router.get('/approvals', deps.auth, async (ctx) => {
    const who = decider(ctx);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { approvals: await deps.approvals.pending(deps.now(), 'admin' in who ? undefined : who.approverId) };
  });

  router.get('/approvals/:id', deps.auth, async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await answering(() => deps.decisions.find(ctx.params.id!, decider(ctx)));
  });

  for (const [action, approve] of [['approve', true], ['deny', false]] as const) {
    router.post(`/approvals/:id/${action}`, deps.auth, optionalJsonBody, async (ctx) => {
      const reason = readDecisionBody(ctx.request.body);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = await answering(() => deps.decisions.decide(ctx.params.id!, decider(ctx), approve, reason));
    });
  }
  return router;
}
