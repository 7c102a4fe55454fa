import Router from '@koa/router';
import { z } from 'zod';
import type { Logger } from '../../log/logger.js';
import type { AuditRepo } from '../../storage/audit-repo.js';
import { ApiError } from '../errors.js';
import { auditStream, type AuditKind } from './audit-export.js';
import { parseQuery, textParam } from './query.js';
import { timeParam } from './time-param.js';

/** `GET /admin/audit`: issued-token records and decision events as NDJSON, in time order, streamed. */
export function auditRoutes(repo: AuditRepo, logger: Logger, pageSize = 500): Router {
  const router = new Router();
  router.get('/admin/audit', (ctx) => {
    const q = parseQuery({
      since: timeParam.optional(),
      until: timeParam.optional(),
      agent: textParam.optional(),
      txn: textParam.optional(),
      kind: z.enum(['token', 'decision'], { error: 'must be token or decision' }).optional(),
    }, ctx.query);
    if (q.since !== undefined && q.until !== undefined && q.since > q.until) {
      throw new ApiError(400, 'invalid_request', 'since must not be after until');
    }
    const kinds = new Set<AuditKind>(q.kind ? [q.kind] : ['token', 'decision']);
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'application/x-ndjson';
    ctx.body = auditStream(repo, { sinceMs: q.since, untilMs: q.until, agent: q.agent, txn: q.txn }, kinds, logger, pageSize);
  });
  return router;
}
