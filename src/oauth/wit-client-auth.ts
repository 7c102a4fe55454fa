import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context, Next } from 'koa';
import { decodeJwt, type JWK } from 'jose';
import type { EventsRepo } from '../storage/events-repo.js';
import type { AnonymousRefusals } from '../http/anonymous-refusals.js';
import type { WorkloadAuthenticator } from '../identity/workload-authenticator.js';
import { TokenVerificationError } from '../tokens/token-errors.js';
import { tokenHash } from '../tokens/token-hash.js';
import type { IssuanceContext } from './token-records.js';

export interface WitClientAuth {
  agentId: string;
  witJti: string;
  /** RFC 7638 thumbprint of the WIT's key: tokens issued on this authentication are bound to it. */
  jkt: string;
  /** The WIT's key (`cnf.jwk`). */
  jwk: JWK;
  agentChecksum?: string;
}

/**
 * The WIT authentication of the request being handled. oidc-provider's client authentication methods are
 * a closed set, so WIT + WPT is checked here, before the provider; the provider knows WIT agents as clients
 * without authentication of their own, and the adapter resolves such a client only inside a request that
 * authenticated as it (see adapter.ts).
 */
export const witAuthStorage = new AsyncLocalStorage<WitClientAuth>();

/** The subject a WIT claims, unverified: only for the record of a refusal. */
function claimedSubject(wit: string): string | null {
  try {
    const { sub } = decodeJwt(wit);
    return typeof sub === 'string' ? sub.slice(0, 2048) : null;
  } catch {
    return null;
  }
}

/** WIT + WPT client authentication (spec section 3) for the token, introspection and revocation endpoints. */
export function witClientAuth(deps: { authenticator: WorkloadAuthenticator; issuer: string; events: EventsRepo; anonymous: Pick<AnonymousRefusals, 'refused'> }) {
  /** `authenticated`: the WIT and WPT were good, the agent just doesn't use them. */
  const refuse = async (ctx: Context, description: string, agentId: string | null, authenticated = false) => {
    ctx.status = 401;
    ctx.set('Cache-Control', 'no-store');
    ctx.set('WWW-Authenticate', 'WIT error="invalid_client"');
    ctx.body = { error: 'invalid_client', error_description: description };
    const event = { decision: 'refused' as const, action: `client_auth:${ctx.path}`, client_id: agentId, reason: 'invalid_client', detail: description };
    await (authenticated ? deps.events.record(event) : deps.anonymous.refused(ctx, event));
  };

  return async function authenticateWorkload(ctx: Context, next: Next): Promise<unknown> {
    const wit = ctx.get('workload-identity-token');
    const wpt = ctx.get('workload-proof-token');
    if (!wit && !wpt) return next();
    if (!wit || !wpt) return refuse(ctx, 'WIT authentication needs both the Workload-Identity-Token and Workload-Proof-Token headers', null);
    if (ctx.get('authorization')) return refuse(ctx, 'client authentication must use one mechanism only', null);
    let auth;
    try {
      auth = await deps.authenticator.authenticate({ wit, wpt, audience: `${deps.issuer}${ctx.path}` });
    } catch (err) {
      if (err instanceof TokenVerificationError) return refuse(ctx, err.message, claimedSubject(wit));
      throw err;
    }
    if (auth.agent.token_endpoint_auth_method !== 'wit') return refuse(ctx, 'this agent does not authenticate with a WIT', auth.agent.id, true);
    // Tokens issued on this authentication descend from the WIT: revoking it revokes them, and their records
    // are written only while the WIT's is good.
    (ctx.state as { issuance?: IssuanceContext }).issuance = {
      record: { parent_jti: auth.claims.jti }, parent: { jti: auth.claims.jti, hash: tokenHash(wit), what: 'WIT' },
    };
    return witAuthStorage.run({
      agentId: auth.agent.id, witJti: auth.claims.jti, jkt: auth.jkt, jwk: auth.claims.cnf.jwk, ...(auth.claims.agent_checksum ? { agentChecksum: auth.claims.agent_checksum } : {}),
    }, next);
  };
}
