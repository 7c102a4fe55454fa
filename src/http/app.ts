import Koa from 'koa';
import compose from 'koa-compose';
import Router from '@koa/router';
import type { Logger } from '../log/logger.js';
import type { Database } from '../storage/database.js';
import type { KeyManager } from '../keys/key-manager.js';
import type { OAuthCore } from '../oauth/oauth-core.js';
import { ApiError, errorMapper, notFound } from './errors.js';
import { isDatabaseUnavailable } from '../storage/database-errors.js';
import { requestLog } from './request-log.js';
import type { ServerMetrics } from '../metrics/server-metrics.js';
import { metricsRoutes, requestMetrics } from './metrics-routes.js';

export interface AppParts {
  logger: Logger;
  db: Database;
  keys: KeyManager;
  oauth: OAuthCore;
  trustProxy: boolean;
  /** WIT + WPT client authentication, run before the OAuth endpoints. */
  witClientAuth: Koa.Middleware;
  /** Routers of our own public endpoints (POST /wit). */
  publicRouters: Router[];
  /** Guards every path under /admin. */
  adminAuth: Koa.Middleware;
  /** The admin API's routers. */
  routers: Router[];
  /** Answers 429 to a source whose unauthenticated requests were refused too often (see anonymous-refusals.ts). */
  throttle: Koa.Middleware;
  /** Request metrics and `GET /metrics`; absent when metrics are off. */
  metrics?: { metrics: ServerMetrics; token: string | undefined };
}

/** The OAuth endpoints oidc-provider serves here; every other provider route is closed. */
const OAUTH_ROUTES: Record<string, readonly string[]> = {
  '/.well-known/oauth-authorization-server': ['GET', 'OPTIONS'],
  '/token': ['POST', 'OPTIONS'],
  '/token/introspection': ['POST', 'OPTIONS'],
  '/token/revocation': ['POST', 'OPTIONS'],
  // CIBA backchannel authentication (human approval of workflow steps).
  '/backchannel': ['POST', 'OPTIONS'],
  '/.well-known/openid-configuration': ['GET', 'OPTIONS'],
};

/**
 * Requests that authenticate their caller, whose refusals count against their source: the OAuth endpoints'
 * POSTs, WIT issuance, the Shared Signals API and the approvers' API and page. Public reads (health, keys,
 * discovery, metrics, the Biscuit revocation list) and the admin API are never throttled.
 */
function throttled(ctx: Koa.Context): boolean {
  // As the routers match it: without regard to case, and with or without a trailing slash.
  const p = ctx.path.toLowerCase().replace(/\/+$/, '') || '/';
  if (OAUTH_ROUTES[p]) return ctx.method === 'POST';
  return p === '/wit' || p.startsWith('/ssf/') || p === '/approvals' || p.startsWith('/approvals/') || p === '/approve' || p.startsWith('/approve/');
}

function methodNotAllowed(ctx: Koa.Context, allowed: readonly string[]): ApiError {
  ctx.set('Allow', allowed.join(', '));
  return new ApiError(405, 'invalid_request', `${ctx.method} is not allowed here; allowed: ${allowed.join(', ')}`);
}

/** The route a request matched, as its pattern (`/admin/agents/:id`), never the path itself; `unmatched` for 404s. */
function routePattern(ctx: Koa.Context, routers: Router[]): string {
  const matched = (ctx as { _matchedRoute?: string | RegExp })._matchedRoute;
  if (matched !== undefined) return String(matched);
  if (OAUTH_ROUTES[ctx.path]) return ctx.path;
  // Refused before reaching its route (admin authentication, 405): the first pattern matching the path.
  for (const r of routers) {
    const layer = r.match(ctx.path, ctx.method).path.find((l) => l.methods.length > 0);
    if (layer) return String(layer.path);
  }
  return 'unmatched';
}

export function createApp(parts: AppParts): Koa {
  const app = new Koa({ proxy: parts.trustProxy });
  app.silent = true;
  const router = new Router();
  const publicRouters = [...parts.publicRouters, ...(parts.metrics ? [metricsRoutes(parts.metrics.metrics, parts.metrics.token)] : [])];
  const allRouters = [router, ...publicRouters, ...parts.routers];

  app.use(requestLog(parts.logger));
  if (parts.metrics) app.use(requestMetrics(parts.metrics.metrics, (ctx) => routePattern(ctx, allRouters)));
  app.use(errorMapper(parts.logger));
  app.use((ctx, next) => (throttled(ctx) ? parts.throttle(ctx, next) : next()));

  router.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    const ok = await parts.db.ping();
    ctx.status = ok ? 200 : 503;
    ctx.body = { status: ok ? 'ready' : 'database unreachable' };
  });
  router.get('/jwks', async (ctx) => {
    let jwks;
    try {
      jwks = await parts.keys.jwks();
      ctx.set('Cache-Control', 'public, max-age=60');
    } catch (err) {
      // While the database can't be reached, verifiers still get the keys last read, for a short while.
      jwks = isDatabaseUnavailable(err) ? parts.keys.lastJwks() : undefined;
      if (!jwks) throw err;
      ctx.set('Cache-Control', 'public, max-age=5');
    }
    ctx.type = 'application/jwk-set+json';
    ctx.body = jwks;
  });

  // The OAuth endpoints first: they are exact paths, and the token endpoint is the busiest.
  const oauth = parts.oauth.middleware();
  const serveOAuth = async (ctx: Koa.Context, next: Koa.Next) => {
    if (ctx.method === 'POST') return parts.witClientAuth(ctx, () => oauth(ctx, next));
    if (ctx.path !== '/.well-known/oauth-authorization-server') return oauth(ctx, next);
    // RFC 8414 metadata: the same document, served by the provider's discovery route.
    ctx.path = '/.well-known/openid-configuration';
    try {
      return await oauth(ctx, next);
    } finally {
      ctx.path = '/.well-known/oauth-authorization-server';
    }
  };
  app.use(async (ctx, next) => {
    const methods = OAUTH_ROUTES[ctx.path];
    if (!methods) return next();
    if (!methods.includes(ctx.method)) throw methodNotAllowed(ctx, methods);
    await serveOAuth(ctx, next);
    // Token, introspection and revocation answers, errors included, are never cached (RFC 6749 §5.1, §5.2).
    if (ctx.method === 'POST' && !ctx.response.get('Cache-Control')) ctx.set('Cache-Control', 'no-store');
    // The provider answers only CORS preflights; any other OPTIONS gets the allowed methods, not an empty 404.
    if (ctx.method === 'OPTIONS' && ctx.status === 404 && ctx.body == null) {
      ctx.set('Allow', methods.join(', '));
      ctx.status = 204;
    }
  });

  app.use(router.routes());
  for (const r of publicRouters) app.use(r.routes());
  // The admin routers see only /admin paths, after admin authentication.
  const adminRoutes = compose(parts.routers.map((r) => r.routes() as Koa.Middleware));
  app.use((ctx, next) => (ctx.path === '/admin' || ctx.path.startsWith('/admin/') ? parts.adminAuth(ctx, () => adminRoutes(ctx, next)) : next()));

  app.use((ctx) => {
    // A known path with another method is a 405, anything else a 404.
    const allowed = new Set(allRouters.flatMap((r) => r.match(ctx.path, ctx.method).path.flatMap((layer) => layer.methods)));
    allowed.delete('HEAD');
    if (allowed.size) throw methodNotAllowed(ctx, [...allowed]);
    throw notFound('route');
  });
  return app;
}
