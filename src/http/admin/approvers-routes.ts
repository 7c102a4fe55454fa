import Router from '@koa/router';
import type { ApproversRepo } from '../../storage/approvers-repo.js';
import { validateApprover } from '../../policy/approvals.js';
import { newApproverCredential, secretHash } from '../../identity/approver-credential.js';
import { ApiError, notFound } from '../errors.js';
import { jsonBody } from './json-body.js';
import { limitParam, parseQuery, textParam } from './query.js';

/** Approvers (admin API): registered with a credential shown once, stored as its hash. */
export function approversRoutes(approvers: ApproversRepo): Router {
  const router = new Router();

  router.post('/admin/approvers', jsonBody, async (ctx) => {
    const { id } = validateApprover(ctx.request.body);
    const credential = newApproverCredential();
    const created = await approvers.register(id, secretHash(credential));
    if (!created) throw new ApiError(409, 'conflict', `approver ${id} is already registered`);
    ctx.status = 201;
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Location', `/admin/approvers/${encodeURIComponent(id)}`);
    ctx.body = { ...created, credential };
  });

  router.get('/admin/approvers', async (ctx) => {
    const q = parseQuery({ limit: limitParam, after: textParam.optional() }, ctx.query);
    const list = await approvers.list(q.limit, q.after);
    ctx.body = { approvers: list, ...(list.length === q.limit ? { next: list.at(-1)!.id } : {}) };
  });

  router.get('/admin/approvers/:id', async (ctx) => {
    const approver = await approvers.find(ctx.params.id!);
    if (!approver) throw notFound('approver');
    ctx.body = approver;
  });

  router.post('/admin/approvers/:id/credential', async (ctx) => {
    const credential = newApproverCredential();
    if (!(await approvers.replaceCredential(ctx.params.id!, secretHash(credential)))) throw notFound('approver');
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { ...(await approvers.find(ctx.params.id!)), credential };
  });

  router.delete('/admin/approvers/:id', async (ctx) => {
    if (!(await approvers.disable(ctx.params.id!))) throw notFound('approver');
    ctx.body = await approvers.find(ctx.params.id!);
  });

  return router;
}
