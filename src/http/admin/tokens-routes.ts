import Router from '@koa/router';
import { z } from 'zod';
import type { EventsRepo } from '../../storage/events-repo.js';
import type { TokensRepo } from '../../storage/tokens-repo.js';
import { notFound } from '../errors.js';
import { limitParam, parseQuery, textParam } from './query.js';

export function tokensRoutes(tokens: TokensRepo, events: EventsRepo): Router {
  const router = new Router();

  router.get('/admin/tokens', async (ctx) => {
    const { limit, after, ...filter } = parseQuery({
      sub: textParam.optional(), client_id: textParam.optional(), txn: textParam.optional(), jti: textParam.optional(), type: textParam.optional(), limit: limitParam,
      after: z.string().regex(/^\d+\.[A-Za-z0-9_-]+$/, 'must be the `next` value of a previous page').optional(),
    }, ctx.query);
    const cursor = after ? { iat: Number(after.slice(0, after.indexOf('.'))), jti: after.slice(after.indexOf('.') + 1) } : undefined;
    const list = await tokens.list(filter, limit, cursor);
    const last = list.at(-1);
    ctx.body = { tokens: list, ...(list.length === limit && last ? { next: `${last.iat}.${last.jti}` } : {}) };
  });

  router.get('/admin/tokens/:jti', async (ctx) => {
    const token = await tokens.find(ctx.params.jti!);
    if (!token) throw notFound('token');
    ctx.body = token;
  });

  router.get('/admin/tokens/:jti/lineage', async (ctx) => {
    const token = await tokens.find(ctx.params.jti!);
    if (!token) throw notFound('token');
    ctx.body = { token, ...(await tokens.lineage(token.jti)) };
  });

  router.post('/admin/tokens/:jti/revoke', async (ctx) => {
    const token = await tokens.find(ctx.params.jti!);
    if (!token) throw notFound('token');
    const revoked = await tokens.revokeWithDescendants(token.jti, 'revoked by admin');
    for (const jti of revoked) await events.record({ decision: 'revoked', action: 'admin.revoke', client_id: token.client_id, jti, reason: 'revoked by admin' });
    ctx.body = { revoked };
  });

  router.get('/admin/events', async (ctx) => {
    const q = parseQuery({
      client_id: textParam.optional(),
      decision: z.enum(['issued', 'refused', 'revoked', 'admin', 'approval_requested', 'approved', 'denied', 'expired']).optional(),
      before: z.coerce.number().int().min(1).optional(),
      limit: limitParam,
    }, ctx.query);
    const list = await events.list({ client_id: q.client_id, decision: q.decision, after: q.before }, q.limit);
    ctx.body = { events: list, ...(list.length === q.limit ? { next: list.at(-1)!.id } : {}) };
  });

  return router;
}
