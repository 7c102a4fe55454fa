import Router from '@koa/router';
import type { KeyManager } from '../../keys/key-manager.js';
import type { EventsRepo } from '../../storage/events-repo.js';

/** `onRotated` is told when the new keys start signing (epoch seconds). */
export function keysRoutes(keys: KeyManager, events: EventsRepo, delaySeconds: number, onRotated: (activateAt: number) => Promise<void>): Router {
  const router = new Router();

  router.get('/admin/keys', async (ctx) => {
    ctx.body = { keys: await keys.list() };
  });

  router.post('/admin/keys/rotate', async (ctx) => {
    const { created, activateAt } = await keys.rotate(delaySeconds);
    await onRotated(activateAt);
    await events.record({ decision: 'admin', action: 'keys.rotate', detail: created.join(',') });
    ctx.body = { created, activates_at: activateAt, keys: await keys.list() };
  });

  return router;
}
