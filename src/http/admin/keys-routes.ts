import Router from '@koa/router';
import type { KeyManager } from '../../keys/key-manager.js';
import type { EventsRepo } from '../../storage/events-repo.js';
import { noSignals, type SecuritySignals } from '../../storage/security-signals.js';

/** `onRotated` is told when the new keys start signing (epoch seconds). */
export function keysRoutes(
  keys: KeyManager, events: EventsRepo, delaySeconds: number, onRotated: (activateAt: number) => Promise<void>,
  signals: { issuer: string; signals: SecuritySignals } = { issuer: '', signals: noSignals },
): Router {
  const router = new Router();

  router.get('/admin/keys', async (ctx) => {
    ctx.body = { keys: await keys.list() };
  });

  router.post('/admin/keys/rotate', async (ctx) => {
    // Shared Signals receivers hear of it (credential-change about the issuer) and refetch the JWKS.
    const { created, activateAt } = await keys.rotate(delaySeconds, (trx) => signals.signals.credentialChanged(trx, signals.issuer, 'update', 'the issuer\'s signing keys rotated'));
    await onRotated(activateAt);
    await events.record({ decision: 'admin', action: 'keys.rotate', detail: created.join(',') });
    ctx.body = { created, activates_at: activateAt, keys: await keys.list() };
  });

  return router;
}
