import Router from '@koa/router';
import { z } from 'zod';
import type { EventsRepo } from '../storage/events-repo.js';
import type { TokensRepo } from '../storage/tokens-repo.js';
import { jsonBody } from './admin/json-body.js';
import { ApiError } from './errors.js';

export const BISCUIT_REVOCATIONS_PATH = '/biscuit/revocations';
/** How long verifiers may cache the revocation list (seconds). */
export const REVOCATION_LIST_MAX_AGE = 5;
/** A directly revoked id is listed this long: no Biscuit lives longer (BISCUIT_TTL is at most a day). */
const LONGEST_BISCUIT_LIFETIME = 86_400;

/** `GET /biscuit/revocations`: revocation ids of revoked Biscuits still alive, for offline verifiers. */
export function biscuitRevocationListRoutes(tokens: TokensRepo, now: () => number): Router {
  const router = new Router();
  router.get(BISCUIT_REVOCATIONS_PATH, async (ctx) => {
    ctx.set('Cache-Control', `public, max-age=${REVOCATION_LIST_MAX_AGE}`);
    ctx.body = { revocation_ids: await tokens.revokedBiscuitIds(now()), max_age: REVOCATION_LIST_MAX_AGE };
  });
  return router;
}

const revocationBody = z.object({
  revocation_id: z.string().regex(/^[0-9a-f]{128}$/, 'must be a Biscuit revocation id: 128 lowercase hex characters'),
}).strict();

/**
 * `POST /admin/biscuits/revocations`: revokes a Biscuit block by its revocation id, and so every token
 * holding that block. The record holding it, if any, is revoked with its descendants.
 */
export function biscuitAdminRoutes(tokens: TokensRepo, events: EventsRepo, now: () => number): Router {
  const router = new Router();
  router.post('/admin/biscuits/revocations', jsonBody, async (ctx) => {
    const parsed = revocationBody.safeParse(ctx.request.body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new ApiError(400, 'invalid_request', issue.code === 'unrecognized_keys' ? `unknown field: ${issue.keys.join(', ')}` : `${issue.path.join('.') || 'body'}: ${issue.message}`);
    }
    const id = parsed.data.revocation_id;
    const record = (await tokens.findByRevocationIds([id]))[0];
    const revoked = record ? await tokens.revokeWithDescendants(record.jti, 'revoked by admin') : [];
    if (!record) await tokens.revokeBiscuitId(id, now() + LONGEST_BISCUIT_LIFETIME, 'revoked by admin');
    for (const jti of revoked) await events.record({ decision: 'revoked', action: 'admin.revoke', client_id: record?.client_id ?? null, jti, reason: 'revoked by admin' });
    if (!record) await events.record({ decision: 'revoked', action: 'admin.revoke', client_id: null, reason: 'revoked by admin', detail: `revocation id ${id}` });
    ctx.body = { revocation_id: id, revoked };
  });
  return router;
}
