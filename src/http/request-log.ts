import type { Context, Next } from 'koa';
import type { Logger } from '../log/logger.js';

/** One JSON line per request: method, path (never the query), status, duration, authenticated client. */
export function requestLog(logger: Logger) {
  return async function logRequest(ctx: Context, next: Next): Promise<void> {
    const start = process.hrtime.bigint();
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const clientId = (ctx as { oidc?: { client?: { clientId?: string } } }).oidc?.client?.clientId;
      logger.info({ method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(ms * 100) / 100, ...(clientId ? { client_id: clientId } : {}) }, 'request');
    }
  };
}
