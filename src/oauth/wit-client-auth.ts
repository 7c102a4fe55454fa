import { AsyncLocalStorage } from 'node:async_hooks';
import * as querystring from 'node:querystring';
import type { Context, Next } from 'koa';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
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

/**
 * The WIT authentication of the request, for the client `clientId` the provider authenticated: `undefined` when
 * the request did not authenticate with a WIT. A WIT of another agent than the client is refused `invalid_client`
 * (`onMismatch: 'refuse'`, the default), or, for a lookup that only asks whether the request authenticated as
 * `clientId`, treated as no WIT (`'ignore'`). Every reader of the request's WIT goes through here, never through
 * {@link witAuthStorage} directly: a WIT's key, checksum and record belong to its own agent only.
 */
export function workloadAuthOf(clientId: string, onMismatch: 'refuse' | 'ignore' = 'refuse'): WitClientAuth | undefined {
  const auth = witAuthStorage.getStore();
  if (!auth) return undefined;
  if (auth.agentId === clientId) return auth;
  if (onMismatch === 'ignore') return undefined;
  // 401, as every failed client authentication (RFC 6749 §5.2): the provider's InvalidClient is a 400.
  throw Object.assign(new errors.InvalidClient('the WIT was issued to another agent than the authenticated client'), { status: 401, statusCode: 401 });
}

/** The client-authentication parameters of the provider's own mechanisms, in a form body or the query. */
const OTHER_MECHANISM_PARAMS = ['client_secret', 'client_assertion', 'client_assertion_type'];

/** The provider's own limit on a request body (oidc-provider lib/shared/selective_body.js). */
const BODY_LIMIT = 56 * 1024;

/**
 * The form body of a request, read here so that its parameters can be looked at before the provider
 * authenticates the client; the provider then parses the same bytes from `req.body` (its selective_body
 * falls back to it once the stream has been read). `undefined` when the body can't be read within the limit.
 */
async function readForm(ctx: Context): Promise<Record<string, unknown> | undefined> {
  const req = ctx.req as typeof ctx.req & { body?: unknown };
  if (!ctx.is('application/x-www-form-urlencoded') || !req.readable) return {};
  try {
    return await readFormOf(ctx, req);
  } catch {
    // An unknown charset, a broken stream: the provider's own answer, invalid_request.
    return undefined;
  }
}

async function readFormOf(ctx: Context, req: Context['req'] & { body?: unknown }): Promise<Record<string, unknown> | undefined> {
  const length = ctx.request.length;
  if (length !== undefined && length > BODY_LIMIT) return undefined;
  const chunks: Buffer[] = [];
  let received = 0;
  for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    received += chunk.length;
    if (received > BODY_LIMIT || (length !== undefined && received > length)) return undefined;
    chunks.push(chunk);
  }
  if (length !== undefined && received !== length) return undefined;
  const raw = Buffer.concat(chunks, received);
  const text = ctx.request.charset ? new TextDecoder(ctx.request.charset).decode(raw) : raw.toString();
  req.body = ctx.request.charset ? text : raw;
  return querystring.parse(text);
}

/** Whether `params` (a form body or the query) names a credential of another client authentication mechanism. */
const namesOtherMechanism = (params: Record<string, unknown>) => OTHER_MECHANISM_PARAMS.some((p) => Object.hasOwn(params, p));

/** The subject a WIT claims, unverified: only for the record of a refusal. */
function claimedSubject(wit: string): string | null {
  try {
    const { sub } = decodeJwt(wit);
    return typeof sub === 'string' ? sub.slice(0, 2048) : null;
  } catch {
    return null;
  }
}

/** The headers of attestation-based client authentication (draft-ietf-oauth-attestation-based-client-auth). */
const ATTESTATION = 'oauth-client-attestation';
const ATTESTATION_POP = 'oauth-client-attestation-pop';

/**
 * WIT client authentication (spec section 3) for the token, introspection, revocation and backchannel endpoints,
 * in either of two forms:
 * - `attest_jwt_client_auth` (draft-ietf-oauth-attestation-based-client-auth, as draft-ietf-oauth-spiffe-client-auth
 *   profiles it for WITs): the WIT in `OAuth-Client-Attestation`, a Client Attestation PoP JWT signed by its key with
 *   `aud` the issuer in `OAuth-Client-Attestation-PoP`;
 * - the WIMSE headers: the WIT in `Workload-Identity-Token`, a WPT for the endpoint's URL in `Workload-Proof-Token`.
 * The provider then sees a client without authentication of its own (method `none`), named by `client_id`.
 */
export function witClientAuth(deps: { authenticator: WorkloadAuthenticator; issuer: string; events: EventsRepo; anonymous: Pick<AnonymousRefusals, 'refused'> }) {
  /** `authenticated`: the WIT and its proof were good, the agent just doesn't use them. */
  const refuse = async (ctx: Context, description: string, agentId: string | null, scheme: 'WIT' | null = 'WIT', authenticated = false) => {
    ctx.status = 401;
    ctx.set('Cache-Control', 'no-store');
    if (scheme) ctx.set('WWW-Authenticate', `${scheme} error="invalid_client"`);
    ctx.body = { error: 'invalid_client', error_description: description };
    const event = { decision: 'refused' as const, action: `client_auth:${ctx.path}`, client_id: agentId, reason: 'invalid_client', detail: description };
    await (authenticated ? deps.events.record(event) : deps.anonymous.refused(ctx, event));
  };

  return async function authenticateWorkload(ctx: Context, next: Next): Promise<unknown> {
    const wit = ctx.get('workload-identity-token');
    const wpt = ctx.get('workload-proof-token');
    const attestation = ctx.get(ATTESTATION);
    const attestationPop = ctx.get(ATTESTATION_POP);
    const attesting = ctx.headers[ATTESTATION] !== undefined || ctx.headers[ATTESTATION_POP] !== undefined;
    if (!wit && !wpt && !attesting) return next();
    if (attesting && (wit || wpt)) return refuse(ctx, 'client authentication must use one mechanism only', null, null);
    if (attesting && (!attestation || !attestationPop)) {
      return refuse(ctx, 'attestation-based client authentication needs both the OAuth-Client-Attestation and OAuth-Client-Attestation-PoP headers', null, null);
    }
    if (!attesting && (!wit || !wpt)) return refuse(ctx, 'WIT authentication needs both the Workload-Identity-Token and Workload-Proof-Token headers', null);
    if (ctx.get('authorization')) return refuse(ctx, 'client authentication must use one mechanism only', null, attesting ? null : 'WIT');
    // Nor a client secret or client assertion in the query or the body: the provider would authenticate that
    // client by it, while the request's WIT is another agent's.
    if (namesOtherMechanism(ctx.query)) return refuse(ctx, 'client authentication must use one mechanism only', null, attesting ? null : 'WIT');
    const form = await readForm(ctx);
    if (!form) {
      ctx.status = 400;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'invalid_request', error_description: 'failed to parse the request body' };
      return undefined;
    }
    if (namesOtherMechanism(form)) return refuse(ctx, 'client authentication must use one mechanism only', null, attesting ? null : 'WIT');
    const presented = attesting ? attestation : wit;
    let auth;
    try {
      auth = attesting
        ? await deps.authenticator.authenticateAttestation({ wit: attestation, pop: attestationPop })
        : await deps.authenticator.authenticate({ wit, wpt, audience: `${deps.issuer}${ctx.path}` });
    } catch (err) {
      if (err instanceof TokenVerificationError) return refuse(ctx, err.message, claimedSubject(presented), attesting ? null : 'WIT');
      throw err;
    }
    if (auth.agent.token_endpoint_auth_method !== 'wit') return refuse(ctx, 'this agent does not authenticate with a WIT', auth.agent.id, attesting ? null : 'WIT', true);
    // The provider knows no attestation here (its own attestClientAuth is off): it must not see the headers.
    delete ctx.req.headers[ATTESTATION];
    delete ctx.req.headers[ATTESTATION_POP];
    // Tokens issued on this authentication descend from the WIT: revoking it revokes them, and their records
    // are written only while the WIT's is good.
    (ctx.state as { issuance?: IssuanceContext }).issuance = {
      record: { parent_jti: auth.claims.jti }, parent: { jti: auth.claims.jti, hash: tokenHash(presented), what: 'WIT' },
    };
    return witAuthStorage.run({
      agentId: auth.agent.id, witJti: auth.claims.jti, jkt: auth.jkt, jwk: auth.claims.cnf.jwk, ...(auth.claims.agent_checksum ? { agentChecksum: auth.claims.agent_checksum } : {}),
    }, next);
  };
}

/**
 * Inside the provider: a request authenticated by its WIT that names no client is refused `401 invalid_client`
 * (RFC 6749 §5.2), as any failed client authentication, rather than the provider's `400 invalid_request`. The
 * WIT names the client, but `client_id` is what a client without a credential of the provider's own is found by.
 */
export function witClientIdRequired() {
  return async function requireClientId(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    const auth = witAuthStorage.getStore();
    const body = ctx.body as { error?: string; error_description?: string } | undefined;
    if (!auth?.witJti || ctx.status !== 400 || body?.error !== 'invalid_request' || body.error_description !== NO_CLIENT) return;
    ctx.status = 401;
    ctx.body = { error: 'invalid_client', error_description: `client_id is required with WIT client authentication: the WIT's subject (${auth.agentId})` };
  };
}

/** oidc-provider's description of a request naming no client (lib/shared/client_auth.js). */
const NO_CLIENT = 'no client authentication mechanism provided';
