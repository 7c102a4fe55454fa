import Router from '@koa/router';
import type { KeyManager } from '../../keys/key-manager.js';
import type { EventsRepo } from '../../storage/events-repo.js';

export function keysRoutes(keys: KeyManager, events: EventsRepo, onRotated: () => void): Router {
  const router = new Router();

  router.get('/admin/keys', async (ctx) => {
    ctx.body = { keys: await keys.list() };
  });

  router.post('/admin/keys/rotate', async (ctx) => {
    const created = await keys.rotate();
    onRotated();
    await events.record({ decision: 'admin', action: 'keys.rotate', detail: created.join(',') });
    ctx.body = { created, keys: await keys.list() };
  });

  return router;
}
