import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { KeyManager, SigningAlg } from '../../keys/key-manager.js';
import { ACCESS_TOKEN_TYPE, mintAccessToken, type ActClaim } from '../../tokens/access-token.js';
import { claimsTxnTokenTyp, mintTxnToken, newTxn, parseContextParam, TXN_TOKEN_TYPE } from '../../tokens/txn-token.js';
import { TokenVerificationError } from '../../tokens/token-errors.js';
import { delegationDepth, extendActChain, MalformedActClaim, mayActAllows, readActClaim } from '../../policy/act-chain.js';
import { chooseAudience, extendContext, narrowExpiry, narrowScope, NarrowingError } from '../../policy/narrowing.js';
import { TOKEN_EXCHANGE_GRANT } from '../../identity/agent-registration.js';
import type { AgentClientFields } from '../client-metadata.js';
import type { IssuanceContext } from '../token-records.js';
import { senderBinding } from './sender-binding.js';
import type { IssuedTokenVerifier } from './issued-tokens.js';
import { claimedIssuer, type ExternalJwtVerifier } from '../../identity/trusted-issuers.js';
import { JWT_GRANT_TTL, mintJwtGrant } from '../../tokens/jwt-grant.js';
import { narrowingRefusal, single, type Client, type Params, type Subject } from './exchange-request.js';
import { delegateBiscuitByExchange, mintBiscuitByExchange, type BiscuitExchangeDeps } from './biscuit-exchange.js';
import { BISCUIT_TOKEN_TYPE } from '../../tokens/biscuit-blocks.js';
import { readWorkflowRequest, stepScope, WORKFLOW_PARAMS, WorkflowRefusal } from '../../policy/workflows.js';
import { toOAuthError as workflowError, type WorkflowIntents } from '../workflow-intent.js';
import { workloadAuthOf } from '../wit-client-auth.js';
import type { ReplayRepo } from '../../storage/replay-repo.js';
import { SELF_SIGNED_CLOCK_TOLERANCE, SELF_SIGNED_TOKEN_TYPE, verifySelfSigned } from '../../tokens/self-signed.js';
import type { JWK } from 'jose';

export { TOKEN_EXCHANGE_GRANT };
export const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

/** Parameters a token-exchange request may repeat (RFC 8693 §2.1). */
export const TOKEN_EXCHANGE_DUPES = ['resource', 'audience'];
export const TOKEN_EXCHANGE_PARAMS = [
  'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type',
  'audience', 'resource', 'scope', 'request_context', 'request_details',
  // Biscuit: the budget ceiling (integer cents) and a delegation's context.
  'budget', 'context',
  // Intent-bound access tokens: the workflow step the token is for, and its transaction.
  ...WORKFLOW_PARAMS,
];

export const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';

/** Subject token types and the kind each must be when we issued it (`null`: only external issuers' tokens). */
const SUBJECT_KINDS: Record<string, 'access_token' | 'txn_token' | null> = {
  [ACCESS_TOKEN_TYPE]: 'access_token',
  [JWT_TOKEN_TYPE]: 'access_token',
  [TXN_TOKEN_TYPE]: 'txn_token',
  [ID_TOKEN_TYPE]: null,
};
/** Actor token types: the requester's own access token, or its WIT. */
const ACTOR_KINDS: Record<string, 'access_token' | 'wit'> = {
  [ACCESS_TOKEN_TYPE]: 'access_token',
  [JWT_TOKEN_TYPE]: 'wit',
};
export const REQUESTED_TOKEN_TYPES = [ACCESS_TOKEN_TYPE, TXN_TOKEN_TYPE, JWT_TOKEN_TYPE, BISCUIT_TOKEN_TYPE];
export const SUBJECT_TOKEN_TYPES_IN_USE = [...Object.keys(SUBJECT_KINDS), BISCUIT_TOKEN_TYPE, SELF_SIGNED_TOKEN_TYPE];

export interface TokenExchangeDeps extends BiscuitExchangeDeps {
  issuer: string;
  trustDomain: string;
  accessTokenTtl: number;
  txnTokenTtl: number;
  maxTxnTokensPerTxn: number;
  maxDelegationDepth: number;
  signingAlg: SigningAlg;
  keys: KeyManager;
  verifier: IssuedTokenVerifier;
  /** Trusted external issuers whose tokens may be subjects (TRUSTED_ISSUERS). */
  external: ExternalJwtVerifier;
  /** Partner authorization servers a JWT authorization grant may be issued for (PARTNER_DOMAINS). */
  partners: readonly string[];
  /** Workflow steps named by token requests (intent-bound tokens). */
  workflowIntents: WorkflowIntents;
  /** One-time `jti`s: self-signed subject tokens are used once. */
  replay: ReplayRepo;
  now: () => number;
}

function toOAuthError(err: unknown): unknown {
  if (err instanceof TokenVerificationError) return new errors.InvalidGrant(err.message);
  if (err instanceof NarrowingError) return narrowingRefusal(err);
  return workflowError(err);
}

/**
 * RFC 8693 token exchange on oidc-provider's token endpoint (client already authenticated there):
 * into a down-scoped access token carrying the actor chain, or into a Transaction Token.
 * Everything can only narrow; every refusal is an RFC 8693 / 6749 error.
 */
export function tokenExchangeHandler(deps: TokenExchangeDeps) {
  return async function tokenExchange(ctx: KoaContextWithOIDC): Promise<void> {
    try {
      await exchange(ctx, deps);
    } catch (err) {
      throw toOAuthError(err);
    }
  };
}

async function exchange(ctx: KoaContextWithOIDC, deps: TokenExchangeDeps): Promise<void> {
  const client = ctx.oidc.client as unknown as Client;
  const params = ctx.oidc.params as Params;
  const subjectToken = single(params, 'subject_token');
  const subjectType = single(params, 'subject_token_type');
  if (!subjectToken) throw new errors.InvalidRequest('missing required parameter subject_token');
  if (!subjectType) throw new errors.InvalidRequest('missing required parameter subject_token_type');
  const actorToken = single(params, 'actor_token');
  const actorType = single(params, 'actor_token_type');
  if (actorToken && !actorType) throw new errors.InvalidRequest('actor_token_type is required with actor_token');
  if (actorType && !actorToken) throw new errors.InvalidRequest('actor_token_type was given without actor_token');
  const requested = single(params, 'requested_token_type') ?? ACCESS_TOKEN_TYPE;
  if (!REQUESTED_TOKEN_TYPES.includes(requested)) throw new errors.InvalidRequest(`unsupported requested_token_type; supported: ${REQUESTED_TOKEN_TYPES.join(', ')}`);
  if (requested !== ACCESS_TOKEN_TYPE && readWorkflowRequest(params)) {
    throw new WorkflowRefusal('invalid_request', `workflow_id is accepted only for requested_token_type ${ACCESS_TOKEN_TYPE}`);
  }

  // Own keys only: `toString` or `constructor` is no token type.
  if (!Object.hasOwn(SUBJECT_KINDS, subjectType) && subjectType !== BISCUIT_TOKEN_TYPE && subjectType !== SELF_SIGNED_TOKEN_TYPE) throw new errors.InvalidRequest(`unsupported subject_token_type ${JSON.stringify(subjectType)}`);
  // A Txn-Token is no access token (draft-ietf-oauth-transaction-tokens): as a subject it is only ever replaced by another.
  if (subjectType === TXN_TOKEN_TYPE && requested !== TXN_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`a Txn-Token subject may only be replaced by a Txn-Token: requested_token_type=${TXN_TOKEN_TYPE}`);
  }
  // A self-signed JWT asserts only the workload itself, for a Txn-Token (draft-ietf-oauth-transaction-tokens).
  if (subjectType === SELF_SIGNED_TOKEN_TYPE && requested !== TXN_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`a self-signed subject token is exchanged only for a Txn-Token: requested_token_type=${TXN_TOKEN_TYPE}`);
  }
  const policy = client.agent_token_exchange ?? {};
  if (policy.subject_token_types && !policy.subject_token_types.includes(subjectType)) {
    throw new errors.UnauthorizedClient(`this agent may not exchange subject tokens of type ${subjectType}`);
  }
  // A Biscuit's delegate is the actor, not the requester (its current holder): a flow of its own.
  if (subjectType === BISCUIT_TOKEN_TYPE) return delegateBiscuitByExchange(ctx, deps, client, params, requested);
  // Issuing an access token (outside a workflow step), a Txn-Token or a JWT grant, the subject token's record
  // is checked as the new token's record is written, with the other records of its batch.
  const deferRecordCheck = (requested === TXN_TOKEN_TYPE || requested === JWT_TOKEN_TYPE || requested === ACCESS_TOKEN_TYPE) && !readWorkflowRequest(params);
  const subject = subjectType === SELF_SIGNED_TOKEN_TYPE
    ? await resolveSelfSigned(deps, client, subjectToken)
    : await resolveSubject(deps, policy, subjectToken, subjectType, deferRecordCheck);

  if (actorToken) {
    const actorKind = Object.hasOwn(ACTOR_KINDS, actorType!) ? ACTOR_KINDS[actorType!] : undefined;
    if (!actorKind) throw new errors.InvalidRequest(`unsupported actor_token_type ${JSON.stringify(actorType)}`);
    const actor = await deps.verifier.verify(actorToken, actorKind);
    const actorId = actorKind === 'wit' ? actor.claims.sub : actor.claims.client_id;
    if (actorId !== client.clientId) throw new errors.InvalidGrant('the actor_token is not the authenticated client\'s');
  }

  const subjectSub = subject.claims.sub as string;
  if (subjectSub !== client.clientId && !policy.may_act_for_others) {
    throw new errors.UnauthorizedClient('this agent may not act for others (token_exchange.may_act_for_others)');
  }
  if (!mayActAllows(subject.claims.may_act, client.clientId)) throw new errors.InvalidGrant('the subject token\'s may_act does not allow this actor');

  if (requested === TXN_TOKEN_TYPE) await issueTxnToken(ctx, deps, client, params, subject);
  else if (requested === JWT_TOKEN_TYPE) await issueJwtGrant(ctx, deps, client, params, subject);
  else if (requested === BISCUIT_TOKEN_TYPE) await mintBiscuitByExchange(ctx, deps, client, params, subject, heldScope(subject), nextActChain(client, deps, subject));
  else await issueAccessToken(ctx, deps, client, params, subject);
}

async function resolveSubject(deps: TokenExchangeDeps, policy: NonNullable<Client['agent_token_exchange']>, token: string, type: string, deferRecordCheck: boolean): Promise<Subject> {
  const iss = claimedIssuer(token);
  const ours = SUBJECT_KINDS[type];
  if (iss === deps.issuer || !iss || type === TXN_TOKEN_TYPE) {
    if (!ours) throw new TokenVerificationError('this server issues no ID tokens: an id_token subject must come from a trusted issuer');
    if (deferRecordCheck) {
      const { kind, claims, recordCheck } = await deps.verifier.verifyClaims(token, ours);
      const txn = typeof claims.txn === 'string' ? claims.txn : undefined;
      return { kind: kind as Subject['kind'], claims, parentJti: recordCheck.jti, recordCheck, ...(txn ? { txn } : {}) };
    }
    const issued = await deps.verifier.verify(token, ours);
    return { kind: issued.kind as Subject['kind'], claims: issued.claims, parentJti: issued.record.jti, recordCheck: issued.recordCheck, ...(issued.record.txn ? { txn: issued.record.txn } : {}) };
  }
  // A Txn-Token never leaves its trust domain (draft-ietf-oauth-transaction-tokens): another domain's is no
  // subject here, whatever type it is presented as and whatever is asked for, even from a trusted issuer.
  if (claimsTxnTokenTyp(token)) {
    throw new errors.InvalidRequest('a Txn-Token is valid only inside its trust domain: another issuer\'s Txn-Token is no subject token here');
  }
  if (!deps.external.has(iss)) throw new TokenVerificationError(`the subject token's issuer ${iss} is not trusted by this server`);
  if (!(policy.subject_issuers ?? []).includes(iss)) throw new errors.UnauthorizedClient(`this agent may not exchange tokens issued by ${iss}`);
  const claims = await deps.external.verify(token, iss, 'subject token', { requiredClaims: ['sub'] });
  return { kind: 'external', claims, parentJti: null };
}

/**
 * A self-signed subject token (draft-ietf-oauth-transaction-tokens): signed by the key the requester proved
 * itself with (its WIT's key) or registered for `private_key_jwt`, naming the requester as `iss` and `sub`
 * and this server as `aud`, short-lived, and used once: its `jti` is kept until it can no longer be accepted.
 */
async function resolveSelfSigned(deps: TokenExchangeDeps, client: Client, token: string): Promise<Subject> {
  const wit = workloadAuthOf(client.clientId);
  const keys = wit
    ? [wit.jwk]
    : client.clientAuthMethod === 'private_key_jwt' ? ((client.jwks?.keys ?? []) as JWK[]) : [];
  if (!keys.length) throw new errors.InvalidGrant('a self-signed subject token must be signed with the key this agent authenticates with (a WIT, or private_key_jwt)');
  const claims = await verifySelfSigned(token, { workload: client.clientId, keys, issuer: deps.issuer, now: deps.now() });
  if (!(await deps.replay.claim(`self-signed ${client.clientId}`, claims.jti, claims.exp + SELF_SIGNED_CLOCK_TOLERANCE))) {
    throw new errors.InvalidGrant('the self-signed subject token was already used');
  }
  return { kind: 'self_signed', claims, parentJti: null };
}

/** The subject token's record check, made again (or, deferred, only) as the record of the token issued for it is written. */
function parentOf(subject: Subject): Pick<IssuanceContext, 'parent'> {
  return subject.recordCheck ? { parent: subject.recordCheck } : {};
}

/** The scope a subject token holds: `null` when an external token carries none (the requester's registration bounds it). */
function heldScope(subject: Subject): string | undefined | null {
  const { scope, scp } = subject.claims;
  if (typeof scope === 'string') return scope;
  if (Array.isArray(scp)) return scp.filter((s) => typeof s === 'string').join(' ');
  // An external identity token, or a self-signed one: what the requester is registered for bounds it.
  return subject.kind === 'external' || subject.kind === 'self_signed' ? null : undefined;
}

/**
 * The call chain a subject token carries: its `act` claim. A Txn-Token without one whose requesting workload
 * (`req_wl`) is not its subject was requested by that workload for the subject: the workload is the chain.
 */
function subjectActChain(subject: Subject, maxDelegationDepth: number): ActClaim | undefined {
  let act;
  try {
    act = readActClaim(subject.claims.act, maxDelegationDepth + 1);
  } catch (err) {
    if (err instanceof MalformedActClaim) throw new errors.InvalidGrant(`the subject token's ${err.message}`);
    throw err;
  }
  if (act || subject.kind !== 'txn_token') return act;
  const { req_wl: requester, sub } = subject.claims;
  return typeof requester === 'string' && requester !== sub ? { sub: requester } : undefined;
}

function nextActChain(client: Client, deps: TokenExchangeDeps, subject: Subject): ActClaim | undefined {
  const act = extendActChain(subject.claims.sub as string, subjectActChain(subject, deps.maxDelegationDepth), client.clientId);
  const depth = delegationDepth(act);
  const limit = Math.min(client.agent_max_delegation_depth ?? deps.maxDelegationDepth, deps.maxDelegationDepth);
  if (depth > limit) throw new errors.InvalidRequest(`delegation depth ${depth} exceeds the limit of ${limit}`);
  return act;
}

async function issueJwtGrant(ctx: KoaContextWithOIDC, deps: TokenExchangeDeps, client: Client, params: Params, subject: Subject): Promise<void> {
  const asked = [params.resource, params.audience].flat().filter((v): v is string => typeof v === 'string');
  if (asked.length !== 1 || !deps.partners.includes(asked[0]!)) {
    throw new errors.InvalidTarget('a JWT authorization grant needs audience (or resource) naming one configured partner authorization server');
  }
  const audience = chooseAudience(asked, client.agent_audiences ?? []);
  const act = nextActChain(client, deps, subject);
  const scope = narrowScope(single(params, 'scope'), heldScope(subject), client.agent_scopes ?? []);
  const now = deps.now();
  const exp = narrowExpiry(now + JWT_GRANT_TTL, subject.claims.exp as number, now);
  const { token, record } = await mintJwtGrant({
    issuer: deps.issuer, subject: subject.claims.sub as string, clientId: client.clientId, audience, now, exp,
    signer: await deps.keys.signer(deps.signingAlg), parentJti: subject.parentJti,
    ...(scope ? { scope } : {}), ...(act ? { act } : {}), ...(subject.txn ? { txn: subject.txn } : {}),
  });
  (ctx.state as { issuance?: IssuanceContext }).issuance = { complete: record, ...parentOf(subject) };
  ctx.body = { access_token: token, issued_token_type: JWT_TOKEN_TYPE, token_type: 'N_A', expires_in: exp - now, ...(scope ? { scope } : {}) };
}

async function issueAccessToken(ctx: KoaContextWithOIDC, deps: TokenExchangeDeps, client: Client, params: Params, subject: Subject): Promise<void> {
  const checksum = workloadAuthOf(client.clientId)?.agentChecksum;
  const workflow = await deps.workflowIntents.resolve(ctx, { clientId: client.clientId, ...(checksum ? { agentChecksum: checksum } : {}) }, subject.txn);
  const act = nextActChain(client, deps, subject);
  let requestedScope = single(params, 'scope');
  if (workflow) {
    // Within the step's scopes; by default the step's scopes the subject and the requester both hold.
    const held = (narrowScope(undefined, heldScope(subject), client.agent_scopes ?? []) ?? '').split(' ').filter(Boolean);
    requestedScope = stepScope(workflow.step, requestedScope, held);
  }
  const scope = narrowScope(requestedScope, heldScope(subject), client.agent_scopes ?? []);
  const asked = [params.resource, params.audience].flat().filter((v): v is string => typeof v === 'string');
  const audience = chooseAudience(asked, client.agent_audiences ?? []);
  const now = deps.now();
  const exp = narrowExpiry(now + deps.accessTokenTtl, subject.claims.exp as number, now);

  const { jkt, wit } = await senderBinding(ctx, client.clientId);

  const { token, record } = await mintAccessToken({
    issuer: deps.issuer, subject: subject.claims.sub as string, clientId: client.clientId, audience, now, exp,
    signer: await deps.keys.signer(deps.signingAlg), parentJti: subject.parentJti,
    ...(scope ? { scope } : {}), ...(act ? { act } : {}), ...(jkt ? { jkt } : {}),
    ...(workflow ? { txn: workflow.txn, intent: workflow.intent } : subject.txn ? { txn: subject.txn } : {}),
    ...(wit?.agentChecksum ? { agentChecksum: wit.agentChecksum } : {}),
  });
  (ctx.state as { issuance?: IssuanceContext }).issuance = { complete: record, ...(workflow ? { workflow } : {}), ...parentOf(subject) };
  ctx.body = {
    access_token: token,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: jkt ? 'DPoP' : 'Bearer',
    expires_in: exp - now,
    ...(scope ? { scope } : {}),
  };
}

async function issueTxnToken(ctx: KoaContextWithOIDC, deps: TokenExchangeDeps, client: Client, params: Params, subject: Subject): Promise<void> {
  const audience = [params.audience, params.resource].flat().filter((v): v is string => typeof v === 'string');
  if (audience.length !== 1 || audience[0] !== deps.trustDomain) {
    throw new errors.InvalidTarget(`a Txn-Token's audience must be the trust domain: audience=${deps.trustDomain}`);
  }
  // The transaction's purpose is required (draft-ietf-oauth-transaction-tokens, Txn-Token Request).
  const requestedScope = single(params, 'scope');
  if (requestedScope === undefined || !requestedScope.split(' ').some(Boolean)) {
    throw new errors.InvalidRequest('missing required parameter scope: the purpose of the transaction');
  }
  const details = readContext(params, 'request_details');
  const context = readContext(params, 'request_context');
  const replacing = subject.kind === 'txn_token';
  // The call chain: the requester joins the subject's actor chain (a replacement's: the workloads that requested the
  // tokens it replaces), counted against the delegation depth limits like any exchange.
  const act = nextActChain(client, deps, subject);
  // A Txn-Token continues the transaction its subject belongs to, or starts one.
  const continued = replacing ? (subject.claims.txn as string) : subject.txn;
  const txn = continued ?? newTxn();
  const scope = narrowScope(requestedScope, heldScope(subject), replacing ? undefined : client.agent_scopes ?? []);
  const tctx = replacing ? extendContext(subject.claims.tctx as Record<string, unknown> | undefined, details, 'request_details') : details;
  const serverFacts = { req_ip: ctx.ip, authn: client.clientAuthMethod === 'none' ? 'wit' : client.clientAuthMethod };
  const requested = { ...(context ?? {}), ...serverFacts };
  const rctx = replacing ? { ...(extendContext(stripServerFacts(subject.claims.rctx), stripServerFacts(context), 'request_context') ?? {}), ...serverFacts } : requested;
  const now = deps.now();
  // Never past the subject's expiry, a replaced Txn-Token's included: a chain of replacements cannot outlive its origin.
  const exp = narrowExpiry(now + deps.txnTokenTtl, subject.claims.exp as number, now);
  const { token, record } = await mintTxnToken({
    issuer: deps.issuer, trustDomain: deps.trustDomain, txn, subject: subject.claims.sub as string, requester: client.clientId,
    now, exp, signer: await deps.keys.signer(deps.signingAlg), parentJti: subject.parentJti,
    ...(scope ? { scope } : {}), ...(act ? { act } : {}), ...(tctx ? { tctx } : {}), rctx,
  });
  // A transaction started here holds this one token (the limit is at least 1): only a continued one is counted.
  (ctx.state as { issuance?: IssuanceContext }).issuance = { complete: record, ...(continued ? { maxPerTxn: deps.maxTxnTokensPerTxn } : {}), ...parentOf(subject) };
  ctx.body = {
    access_token: token,
    issued_token_type: TXN_TOKEN_TYPE,
    token_type: 'N_A',
    expires_in: exp - now,
    ...(scope ? { scope } : {}),
  };
}

function readContext(params: Params, name: string): Record<string, unknown> | undefined {
  const raw = single(params, name);
  if (raw === undefined) return undefined;
  const parsed = parseContextParam(raw);
  if (!parsed) throw new errors.InvalidRequest(`${name} must be a JSON object, plain or base64url-encoded`);
  return parsed;
}

/** `req_ip` and `authn` are the server's to state, per request. */
function stripServerFacts(ctx: unknown): Record<string, unknown> | undefined {
  if (!ctx || typeof ctx !== 'object') return undefined;
  const { req_ip: _ip, authn: _authn, ...rest } = ctx as Record<string, unknown>;
  return rest;
}

