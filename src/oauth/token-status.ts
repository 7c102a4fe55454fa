import type { KoaContextWithOIDC } from 'oidc-provider';
import { introspectBiscuit, mayBeBiscuit, revokeBiscuit, type TokenStatusDeps } from './biscuit-status.js';
import type { TokenRecord } from '../storage/tokens-repo.js';
import { readJwt } from '../tokens/access-token.js';
import { tokenHash } from '../tokens/token-hash.js';
import type { Logger } from '../log/logger.js';
import type { AnonymousRefusals } from '../http/anonymous-refusals.js';
import { anonymousRefusal } from './token-records.js';

type Deps = TokenStatusDeps & { anonymous: Pick<AnonymousRefusals, 'refused'>; logger: Logger };

/**
 * The record of a token we issued, found by `jti` and matched on the token's hash, so only the exact
 * token we signed matches. Undefined for anything else.
 */
async function findIssued(deps: Deps, token: string): Promise<{ record: TokenRecord; claims: Record<string, unknown>; typ: string | undefined } | undefined> {
  const jwt = readJwt(token);
  const jti = jwt?.claims.jti;
  if (!jwt || typeof jti !== 'string') return undefined;
  const record = await deps.tokens.find(jti);
  if (!record || record.token_hash !== tokenHash(token)) return undefined;
  return { record, claims: jwt.claims, typ: jwt.header.typ };
}

/** RFC 7662 answer for one of our JWTs: `{active: false}` unless recorded, unrevoked, unexpired and its agent active. */
export async function introspect(deps: Deps, token: string): Promise<Record<string, unknown>> {
  const found = await findIssued(deps, token);
  if (!found) return { active: false };
  const { record, claims } = found;
  if (record.revoked_at || record.exp <= deps.now()) return { active: false };
  const agent = await deps.agents.find(record.client_id);
  if (agent?.status !== 'active') return { active: false };
  const { iss, sub, aud, scope, client_id, jti, iat, exp, nbf, cnf, act, txn, agent_checksum, intent, req_wl, tctx, rctx } = claims;
  const bearerUse = record.type === 'access_token' || record.type === 'wit';
  return {
    active: true,
    iss, sub, aud, scope, client_id, jti, iat, exp, nbf, cnf, act, txn, agent_checksum, intent, req_wl, tctx, rctx,
    token_type: !bearerUse ? 'N_A' : record.cnf_jkt ? 'DPoP' : 'Bearer',
    ...(found.typ ? { typ: found.typ } : {}),
  };
}

/**
 * Replaces oidc-provider's refusal of structured tokens at its introspection and revocation
 * endpoints (after it has authenticated the client) with answers from our token records.
 */
export function tokenStatusMiddleware(deps: Deps) {
  return async function jwtTokenStatus(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    const route = ctx.oidc?.route;
    if (route !== 'introspection' && route !== 'revocation') return;
    const body = ctx.body as { error?: string; error_description?: string } | undefined;
    if (ctx.status >= 400 && ctx.status !== 503 && typeof body?.error === 'string' && anonymousRefusal(ctx, body.error)) {
      // A caller that did not authenticate; refusals of authenticated ones are recorded below.
      const id = ctx.oidc.client?.clientId ?? (ctx.oidc.params as { client_id?: unknown } | undefined)?.client_id;
      await deps.anonymous.refused(ctx, {
        decision: 'refused', action: route, client_id: typeof id === 'string' ? id.slice(0, 2048) : null, reason: body.error,
        detail: typeof body.error_description === 'string' ? body.error_description : null,
      }).catch((err: Error) => deps.logger.warn({ err: { message: err.message } }, 'decision event not recorded'));
      return;
    }
    const client = ctx.oidc.client;
    const token = (ctx.oidc.params as { token?: unknown } | undefined)?.token;
    if (client && ctx.status === 200 && typeof token === 'string' && mayBeBiscuit(token)) {
      // The provider knows no such opaque token; a Biscuit is ours to answer for.
      ctx.set('Cache-Control', 'no-store');
      if (route === 'introspection') {
        ctx.body = await introspectBiscuit(deps, token);
      } else if (!(await revokeBiscuit(deps, token, client.clientId))) {
        ctx.status = 400;
        ctx.body = { error: 'unauthorized_client', error_description: 'the Biscuit does not name this client' };
        await deps.events.record({ decision: 'refused', action: 'revocation', client_id: client.clientId, reason: 'unauthorized_client' });
      }
      return;
    }
    if (!client || ctx.status !== 400 || body?.error !== 'unsupported_token_type' || typeof token !== 'string') return;

    if (route === 'introspection') {
      ctx.status = 200;
      ctx.body = await introspect(deps, token);
      return;
    }

    const found = await findIssued(deps, token);
    ctx.set('Cache-Control', 'no-store');
    if (found && found.record.client_id !== client.clientId) {
      ctx.status = 400;
      ctx.body = { error: 'unauthorized_client', error_description: 'the token was not issued to this client' };
      await deps.events.record({ decision: 'refused', action: 'revocation', client_id: client.clientId, jti: found.record.jti, reason: 'unauthorized_client' });
      return;
    }
    if (found) {
      const revoked = await deps.tokens.revokeWithDescendants(found.record.jti, 'revoked by client', undefined, 'user');
      for (const jti of revoked) await deps.events.record({ decision: 'revoked', action: 'revocation', client_id: client.clientId, jti, reason: 'revoked by client' });
    }
    ctx.status = 200;
    ctx.body = '';
    ctx.type = 'text/plain';
  };
}
