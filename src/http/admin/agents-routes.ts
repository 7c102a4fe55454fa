import Router from '@koa/router';
import { z } from 'zod';
import { AgentExistsError, type AgentRegistry } from '../../identity/agent-registry.js';
import { ApiError, notFound } from '../errors.js';
import { limitParam, parseBody, parseQuery, textParam } from './query.js';
import { jsonBody, optionalJsonBody } from './json-body.js';

export function agentsRoutes(registry: AgentRegistry): Router {
  const router = new Router();

  router.post('/admin/agents', jsonBody, async (ctx) => {
    try {
      const created = await registry.register(ctx.request.body);
      ctx.status = 201;
      ctx.set('Location', `/admin/agents/${encodeURIComponent(created.agent.id)}`);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = created;
    } catch (err) {
      if (err instanceof AgentExistsError) throw new ApiError(409, 'conflict', err.message);
      throw err;
    }
  });

  router.get('/admin/agents', async (ctx) => {
    const q = parseQuery({ status: z.enum(['active', 'disabled']).optional(), limit: limitParam, after: textParam.optional() }, ctx.query);
    const agents = await registry.list(q);
    ctx.body = { agents, ...(agents.length === q.limit ? { next: agents.at(-1)!.id } : {}) };
  });

  router.get('/admin/agents/:id', async (ctx) => {
    const agent = await registry.get(ctx.params.id!);
    if (!agent) throw notFound('agent');
    ctx.body = agent;
  });

  router.patch('/admin/agents/:id', jsonBody, async (ctx) => {
    const agent = await registry.update(ctx.params.id!, ctx.request.body);
    if (!agent) throw notFound('agent');
    ctx.body = agent;
  });

  router.post('/admin/agents/:id/secret', async (ctx) => {
    const rotated = await registry.rotateSecret(ctx.params.id!);
    if (!rotated) throw notFound('agent');
    ctx.set('Cache-Control', 'no-store');
    ctx.body = rotated;
  });

  router.post('/admin/agents/:id/join-tokens', optionalJsonBody, async (ctx) => {
    const q = parseBody({ ttl: z.number().int().min(10).max(86_400).optional() }, ctx.request.body ?? {});
    const issued = await registry.createJoinToken(ctx.params.id!, q.ttl);
    if (!issued) throw notFound('agent');
    ctx.status = 201;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = issued;
  });

  router.delete('/admin/agents/:id', async (ctx) => {
    const disabled = await registry.disable(ctx.params.id!);
    if (!disabled) throw notFound('agent');
    ctx.body = { agent: disabled.agent, revoked_tokens: disabled.revoked.length };
  });

  return router;
}
