import { createHash, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { ServerMetrics } from '../metrics/server-metrics.js';
import { ApiError } from './errors.js';

const digest = (value: string) => createHash('sha256').update(value).digest();

/** `GET /metrics` in the Prometheus text format; with a token configured, only for `Authorization: Bearer <token>`. */
export function metricsRoutes(metrics: ServerMetrics, token: string | undefined): Router {
  const router = new Router();
  const expected = token === undefined ? undefined : digest(token);
  router.get('/metrics', async (ctx) => {
    if (expected) {
      const m = /^Bearer ([\x21-\x7E]+)$/i.exec(ctx.get('authorization'));
      if (!m || !timingSafeEqual(digest(m[1]!), expected)) {
        ctx.set('WWW-Authenticate', m ? 'Bearer error="invalid_token"' : 'Bearer');
        throw new ApiError(401, 'invalid_token', m ? 'the metrics token is not valid' : 'a metrics token is required: Authorization: Bearer <token>');
      }
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.type = metrics.contentType;
    ctx.body = await metrics.text();
  });
  return router;
}

/**
 * Times every request until its response is finished (streamed bodies included) and records it under the
 * route pattern `routeOf` gives, never the raw path.
 */
export function requestMetrics(metrics: ServerMetrics, routeOf: (ctx: Context) => string) {
  return async function timeRequest(ctx: Context, next: Next): Promise<void> {
    const start = process.hrtime.bigint();
    ctx.res.once('close', () => {
      metrics.requestDone(routeOf(ctx), ctx.method, ctx.res.statusCode, Number(process.hrtime.bigint() - start) / 1e9);
    });
    await next();
  };
}
