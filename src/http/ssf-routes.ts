import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { IssuedTokenVerifier } from '../oauth/grants/issued-tokens.js';
import type { EventsRepo } from '../storage/events-repo.js';
import type { AnonymousRefusals } from './anonymous-refusals.js';
import { TokenVerificationError } from '../tokens/token-errors.js';
import { SSF_PATHS, type Transmitter } from '../events/transmitter.js';
import { StreamError } from '../events/stream-config.js';
import { jsonBody } from './admin/json-body.js';
import { ApiError } from './errors.js';

/** The scope an access token needs to manage event streams and poll for events. */
export const SSF_SCOPE = 'ssf.manage';

const quoted = (v: string) => v.replace(/[\\"]/g, '');

/**
 * RFC 6750 bearer authentication for the SSF API: one of our access tokens (recorded, unrevoked,
 * unexpired, its agent active), issued for `audience` (the issuer URL), with the `ssf.manage` scope.
 * The client it was issued to owns the streams it creates. Every refusal is recorded (action `ssf`).
 */
export function ssfBearer(verifier: IssuedTokenVerifier, audience: string, events: EventsRepo, anonymous: Pick<AnonymousRefusals, 'refused'>) {
  const refused = (clientId: string | null, reason: string, detail: string) =>
    events.record({ decision: 'refused', action: 'ssf', client_id: clientId, reason, detail }).catch(() => {});
  /**
   * A refusal before the caller was let in. `clientId`: the client of a token that verified. Such a token for
   * another audience, sender-constrained (its proof is not checked here) or without the scope shows only that
   * the caller has seen it (a resource server it was sent to, a leak), not that it is the client: like a bad
   * token, its refusals go with those of unauthenticated callers (throttled and counted per source).
   */
  const challenge = async (ctx: Context, status: 401 | 403, error: string | undefined, description: string, clientId: string | null = null): Promise<ApiError> => {
    await anonymous.refused(ctx, { decision: 'refused', action: 'ssf', client_id: clientId, reason: error ?? 'invalid_token', detail: description }).catch(() => {});
    ctx.set('WWW-Authenticate', `Bearer realm="${quoted(audience)}", scope="${SSF_SCOPE}"${error ? `, error="${error}", error_description="${quoted(description)}"` : ''}`);
    return new ApiError(status, error ?? 'invalid_request', description);
  };
  return async function ssfAuth(ctx: Context, next: Next): Promise<void> {
    const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(ctx.get('authorization'));
    if (!m) {
      const given = !!ctx.get('authorization');
      throw await challenge(ctx, 401, given ? 'invalid_request' : undefined, given ? 'send the access token as Authorization: Bearer <token>' : `an access token with the ${SSF_SCOPE} scope is required`);
    }
    let claims: Record<string, unknown>;
    let clientId: string;
    try {
      const issued = await verifier.verify(m[1]!, 'access_token');
      claims = issued.claims;
      clientId = issued.record.client_id;
    } catch (err) {
      if (err instanceof TokenVerificationError) throw await challenge(ctx, 401, 'invalid_token', err.message);
      throw err;
    }
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(audience)) throw await challenge(ctx, 401, 'invalid_token', `the access token is not for this API: its audience must be ${audience}`, clientId);
    if (claims.cnf !== undefined) throw await challenge(ctx, 401, 'invalid_token', 'sender-constrained (DPoP or WIT-bound) tokens are not accepted here: use a bearer token', clientId);
    const scopes = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
    if (!scopes.includes(SSF_SCOPE)) throw await challenge(ctx, 403, 'insufficient_scope', `the access token needs the ${SSF_SCOPE} scope`, clientId);
    ctx.state.ssfClient = clientId;
    ctx.set('Cache-Control', 'no-store');
    try {
      await next();
    } catch (err) {
      if (err instanceof StreamError) {
        await refused(clientId, err.code, err.message);
        // No turn to look up a push endpoint's host now (one will be free within the push timeout), or the
        // stream's next verification is not due yet.
        if (err.status === 429 || err.status === 503) ctx.set('Retry-After', String(err.retryAfter));
        throw new ApiError(err.status, err.code, err.message);
      }
      if (err instanceof ApiError && err.status < 500) await refused(clientId, err.code, err.message);
      throw err;
    }
  };
}

function streamIdParam(ctx: Context, required: boolean): string | undefined {
  const keys = Object.keys(ctx.query);
  const unknown = keys.filter((k) => k !== 'stream_id');
  if (unknown.length) throw new ApiError(400, 'invalid_request', `unknown query parameter: ${unknown.join(', ')}`);
  const v = ctx.query.stream_id;
  if (Array.isArray(v)) throw new ApiError(400, 'invalid_request', 'stream_id: give it once');
  if (v === undefined || v === '') {
    if (required) throw new ApiError(400, 'invalid_request', 'stream_id is required');
    return undefined;
  }
  if (v.length > 64 || v.includes('\u0000')) throw new ApiError(404, 'not_found', 'stream not found');
  return v;
}

/** Transmitter metadata, stream management (SSF 1.0 §7–8) and the RFC 8936 poll endpoint. */
export function ssfRoutes(transmitter: Transmitter, auth: ReturnType<typeof ssfBearer>): Router {
  const router = new Router();
  const client = (ctx: Context) => ctx.state.ssfClient as string;

  router.get(SSF_PATHS.configuration, (ctx) => {
    ctx.set('Cache-Control', 'public, max-age=300');
    ctx.body = transmitter.configuration();
  });

  router.post(SSF_PATHS.streams, auth, jsonBody, async (ctx) => {
    ctx.body = await transmitter.create(client(ctx), ctx.request.body);
    ctx.status = 201;
  });
  router.get(SSF_PATHS.streams, auth, async (ctx) => {
    ctx.body = await transmitter.read(client(ctx), streamIdParam(ctx, false));
  });
  router.patch(SSF_PATHS.streams, auth, jsonBody, async (ctx) => {
    ctx.body = await transmitter.update(client(ctx), ctx.request.body, false);
  });
  router.put(SSF_PATHS.streams, auth, jsonBody, async (ctx) => {
    ctx.body = await transmitter.update(client(ctx), ctx.request.body, true);
  });
  router.delete(SSF_PATHS.streams, auth, async (ctx) => {
    await transmitter.remove(client(ctx), streamIdParam(ctx, true)!);
    ctx.status = 204;
  });

  router.get(SSF_PATHS.status, auth, async (ctx) => {
    ctx.body = await transmitter.status(client(ctx), streamIdParam(ctx, true)!);
  });
  router.post(SSF_PATHS.status, auth, jsonBody, async (ctx) => {
    ctx.body = await transmitter.setStatus(client(ctx), ctx.request.body);
  });

  router.post(SSF_PATHS.addSubject, auth, jsonBody, async (ctx) => {
    await transmitter.addSubject(client(ctx), ctx.request.body);
    ctx.status = 200;
    ctx.body = {};
  });
  router.post(SSF_PATHS.removeSubject, auth, jsonBody, async (ctx) => {
    await transmitter.removeSubject(client(ctx), ctx.request.body);
    ctx.status = 204;
  });

  router.post(SSF_PATHS.verify, auth, jsonBody, async (ctx) => {
    await transmitter.verify(client(ctx), ctx.request.body);
    ctx.status = 204;
  });

  router.post(`${SSF_PATHS.poll}/:stream_id`, auth, jsonBody, async (ctx) => {
    const id = ctx.params.stream_id!;
    if (id.length > 64) throw new ApiError(404, 'not_found', 'stream not found');
    ctx.body = await transmitter.poll(client(ctx), id, ctx.request.body);
  });

  return router;
}
