import Router from '@koa/router';
import type { EventsRepo } from '../storage/events-repo.js';
import type { AnonymousRefusals } from './anonymous-refusals.js';
import { WitNotRecordedError, WitRequestError, type WitIssuer } from '../identity/wit-issuer.js';
import { jsonBody } from './admin/json-body.js';
import { ApiError } from './errors.js';

/** `POST /wit`: a Workload Identity Token for an attested agent and the public key it holds. */
export function witRoutes(issuer: WitIssuer, events: EventsRepo, anonymous: Pick<AnonymousRefusals, 'refused'>): Router {
  const router = new Router();
  router.post('/wit', jsonBody, async (ctx) => {
    const claimed = (ctx.request.body as { agent_id?: unknown } | undefined)?.agent_id;
    const clientId = typeof claimed === 'string' ? claimed.slice(0, 2048) : null;
    ctx.set('Cache-Control', 'no-store');
    try {
      const issued = await issuer.issue(ctx.request.body, {
        ...(ctx.get('workload-identity-token') ? { wit: ctx.get('workload-identity-token') } : {}),
        ...(ctx.get('workload-proof-token') ? { wpt: ctx.get('workload-proof-token') } : {}),
      });
      await events.record({ decision: 'issued', action: 'wit', client_id: issued.agent_id, jti: issued.jti, detail: issued.detail })
        .catch(() => {});
      ctx.body = { wit: issued.wit, expires_in: issued.expires_in };
    } catch (err) {
      if (err instanceof WitRequestError) {
        // Before a successful attestation the caller is anyone; after it, the agent.
        if (err.attested) await events.record({ decision: 'refused', action: 'wit', client_id: err.attested, reason: err.code, detail: err.message });
        else await anonymous.refused(ctx, { decision: 'refused', action: 'wit', client_id: clientId, reason: err.code, detail: err.message });
        throw new ApiError(err.status, err.code, err.message);
      }
      if (err instanceof WitNotRecordedError) {
        ctx.set('Retry-After', '1');
        throw new ApiError(503, 'temporarily_unavailable', 'the WIT could not be recorded; try again');
      }
      throw err;
    }
  });
  return router;
}
