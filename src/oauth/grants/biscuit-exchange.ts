import { randomUUID } from 'node:crypto';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { JWK } from 'jose';
import type { KeyManager } from '../../keys/key-manager.js';
import type { AgentsRepo } from '../../storage/agents-repo.js';
import type { NewTokenRecord, TokensRepo } from '../../storage/tokens-repo.js';
import type { ActClaim } from '../../tokens/access-token.js';
import { BISCUIT_TOKEN_TYPE, type AuthorityFacts } from '../../tokens/biscuit-blocks.js';
import { inspectBiscuit, type BiscuitChain } from '../../tokens/biscuit-chain.js';
import { BiscuitError } from '../../tokens/biscuit-errors.js';
import { BISCUIT_KID_PREFIX, biscuitKeyText, biscuitPublicKey, biscuitRootKeys, firstBiscuitKeyText } from '../../tokens/biscuit-keys.js';
import { appendHop, lastRevocationId, mintBiscuit, nextHop } from '../../tokens/biscuit-token.js';
import { loadBiscuit } from '../../tokens/biscuit-wasm.js';
import { tokenHash } from '../../tokens/token-hash.js';
import { newTxn } from '../../tokens/txn-token.js';
import { narrowExpiry, narrowScope } from '../../policy/narrowing.js';
import { delegationDepth } from '../../policy/act-chain.js';
import type { IssuanceContext } from '../token-records.js';
import { workloadAuthOf } from '../wit-client-auth.js';
import type { IssuedTokenVerifier } from './issued-tokens.js';
import { single, type Client, type Params, type Subject } from './exchange-request.js';

export interface BiscuitExchangeDeps {
  issuer: string;
  biscuitTtl: number;
  maxDelegationDepth: number;
  keys: KeyManager;
  tokens: TokensRepo;
  agents: AgentsRepo;
  verifier: IssuedTokenVerifier;
  now: () => number;
}

/** Audiences of a Biscuit: the requested ones (each registered for the requester), or all it has registered. */
function chooseAudiences(params: Params, registered: readonly string[]): string[] {
  const asked = [...new Set([params.resource, params.audience].flat().filter((v): v is string => typeof v === 'string'))];
  const outside = asked.filter((a) => !registered.includes(a));
  if (outside.length) throw new errors.InvalidTarget(`audience ${JSON.stringify(outside[0])} is not a registered audience of this agent`);
  const audiences = asked.length ? asked : [...registered];
  if (!audiences.length) throw new errors.InvalidTarget('audience is required: this agent has no registered audience');
  return audiences.sort();
}

function readBudget(params: Params): number | undefined {
  const raw = single(params, 'budget');
  if (raw === undefined) return undefined;
  if (!/^(0|[1-9][0-9]{0,14})$/.test(raw)) throw new errors.InvalidRequest('budget must be a non-negative integer number of cents');
  return Number(raw);
}

const split = (scope: string | undefined) => [...new Set((scope ?? '').split(' ').filter(Boolean))].sort();

/** The key the requester signs delegation blocks with: its WIT's key, else its first registered Ed25519 / P-256 key. */
function requesterKey(client: Client): string | undefined {
  const wit = workloadAuthOf(client.clientId);
  if (wit) return biscuitKeyText(wit.jwk);
  return firstBiscuitKeyText(client.jwks?.keys as JWK[] | undefined);
}

/** Answers with the Biscuit; its record is written only while `parent`'s (the token it was minted or appended from) is good. */
function respond(ctx: KoaContextWithOIDC, token: string, record: NewTokenRecord, now: number, parent: IssuanceContext['parent']): void {
  (ctx.state as { issuance?: IssuanceContext }).issuance = { complete: record, ...(parent ? { parent } : {}) };
  ctx.body = { access_token: token, issued_token_type: BISCUIT_TOKEN_TYPE, token_type: 'N_A', expires_in: record.exp - now, ...(record.scope ? { scope: record.scope } : {}) };
}

/**
 * Mints a Biscuit from a subject token: the authority block names the subject, this server, the
 * requester as holder (with its key, so it can delegate offline), the narrowed scope as rights, the
 * audiences, a budget within the agent's `token_exchange.max_budget`, `max_depth` and an expiry no later
 * than the subject's.
 */
export async function mintBiscuitByExchange(ctx: KoaContextWithOIDC, deps: BiscuitExchangeDeps, client: Client, params: Params, subject: Subject, heldScope: string | null | undefined, act: ActClaim | undefined): Promise<void> {
  const rights = split(narrowScope(single(params, 'scope'), heldScope, client.agent_scopes ?? []));
  const audiences = chooseAudiences(params, client.agent_audiences ?? []);
  const maxBudget = client.agent_token_exchange?.max_budget ?? 0;
  const budget = readBudget(params) ?? maxBudget;
  if (budget > maxBudget) throw new errors.InvalidRequest(`budget ${budget} exceeds this agent's max_budget of ${maxBudget}`);
  const now = deps.now();
  const exp = narrowExpiry(now + deps.biscuitTtl, subject.claims.exp as number, now);
  const root = deps.keys.activeBiscuitRoot();
  const holderKey = requesterKey(client);
  const facts: AuthorityFacts = {
    issuer: deps.issuer, subject: subject.claims.sub as string, tokenId: randomUUID(), txn: subject.txn ?? newTxn(), holder: client.clientId,
    rights, audiences, budget, expires: new Date(exp * 1000),
    // The hops already taken (the subject's actor chain and this requester) count against the limit.
    maxDepth: Math.max(0, Math.min(client.agent_max_delegation_depth ?? deps.maxDelegationDepth, deps.maxDelegationDepth) - delegationDepth(act)),
    ...(holderKey ? { holderKey } : {}),
  };
  const { token, revocationId } = mintBiscuit(await loadBiscuit(), facts, root);
  respond(ctx, token, {
    jti: facts.tokenId, type: 'biscuit', sub: facts.subject, client_id: client.clientId, actor: act ?? null, parent_jti: subject.parentJti,
    txn: facts.txn, scope: rights.join(' ') || null, audience: audiences, kid: `${BISCUIT_KID_PREFIX}${root.rootKeyId}`, iat: now, exp,
    token_hash: tokenHash(token), cnf_jkt: null, revocation_id: revocationId,
  }, now, subject.recordCheck);
}

/** The delegations of a chain as an RFC 8693 `act` claim: the current delegate outermost. */
function actOf(chain: BiscuitChain, delegate: string): ActClaim {
  let act: ActClaim = { sub: chain.authority.holder };
  for (const hop of chain.hops) act = { sub: hop.delegate, act };
  return { sub: delegate, act };
}

/** The chain of a Biscuit we issued, verified as the issuer: signatures, structure, revocation, expiry. */
export async function inspectOurBiscuit(deps: Pick<BiscuitExchangeDeps, 'keys' | 'tokens' | 'now'>, token: string): Promise<BiscuitChain> {
  const [b, jwks, revoked] = await Promise.all([loadBiscuit(), deps.keys.jwks(), deps.tokens.revokedBiscuitIds(deps.now())]);
  return inspectBiscuit(b, token, { rootKeys: biscuitRootKeys(jwks), now: new Date(deps.now() * 1000), revoked: new Set(revoked) });
}

/** The record of the newest recorded token a chain was built on. */
export async function recordedAncestor(tokens: TokensRepo, chain: BiscuitChain): Promise<NewTokenRecord | undefined> {
  const records = await tokens.findByRevocationIds(chain.revocationIds);
  const position = (r: NewTokenRecord) => chain.revocationIds.indexOf(r.revocation_id ?? '');
  return records.sort((a, b) => position(b) - position(a))[0];
}

const ACTOR_KINDS: Record<string, 'access_token' | 'wit'> = {
  'urn:ietf:params:oauth:token-type:access_token': 'access_token',
  'urn:ietf:params:oauth:token-type:jwt': 'wit',
};

/**
 * Delegation through the token endpoint: the requester, the Biscuit's current delegate, names the next
 * delegate with `actor_token` (its WIT or access token); the server appends a delegation block signed
 * with the token's root key, which stands for the authenticated delegator. Narrowing as offline.
 */
export async function delegateBiscuitByExchange(ctx: KoaContextWithOIDC, deps: BiscuitExchangeDeps, client: Client, params: Params, requested: string): Promise<void> {
  if (requested !== BISCUIT_TOKEN_TYPE) throw new errors.InvalidRequest(`a Biscuit subject token is exchanged for a Biscuit: requested_token_type=${BISCUIT_TOKEN_TYPE}`);
  const actorToken = single(params, 'actor_token');
  const actorType = single(params, 'actor_token_type') ?? '';
  const actorKind = Object.hasOwn(ACTOR_KINDS, actorType) ? ACTOR_KINDS[actorType] : undefined;
  if (!actorToken || !actorKind) throw new errors.InvalidRequest('delegating a Biscuit needs actor_token naming the delegate (its WIT, or its access token)');
  const subjectToken = single(params, 'subject_token')!;
  const chain = await inspectOurBiscuit(deps, subjectToken).catch((err: unknown) => {
    throw err instanceof BiscuitError ? new errors.InvalidGrant(`subject_token: ${err.message}`) : err;
  });
  if (chain.current.holder !== client.clientId) throw new errors.InvalidGrant(`the Biscuit's current delegate is ${chain.current.holder}, not this client`);

  const actor = await deps.verifier.verify(actorToken, actorKind);
  const delegate = (actorKind === 'wit' ? actor.claims.sub : actor.claims.client_id) as string;
  const delegateKey = actorKind === 'wit'
    ? biscuitKeyText((actor.claims.cnf as { jwk: JWK }).jwk)
    : firstBiscuitKeyText((await deps.agents.find(delegate))?.jwks?.keys as JWK[] | undefined);

  const scope = single(params, 'scope');
  const tools = scope === undefined ? undefined : split(scope);
  const notHeld = (tools ?? []).filter((t) => !chain.current.rights.includes(t));
  if (notHeld.length) throw new errors.InvalidScope(`scope not held by the subject Biscuit: ${notHeld.join(' ')}`, '');
  const asked = [params.resource, params.audience].flat().filter((v): v is string => typeof v === 'string');
  if (asked.some((a) => !chain.current.audiences.includes(a))) throw new errors.InvalidTarget('audience not held by the subject Biscuit');
  const budget = readBudget(params);
  const now = deps.now();
  const expires = narrowExpiry(now + deps.biscuitTtl, Math.floor(chain.current.expires.getTime() / 1000), now);
  let hop;
  try {
    hop = nextHop(chain, {
      delegate, context: single(params, 'context') ?? '', expires,
      ...(delegateKey ? { delegateKey } : {}), ...(tools ? { tools } : {}), ...(asked.length ? { audience: asked } : {}), ...(budget !== undefined ? { budget } : {}),
    });
  } catch (err) {
    throw err instanceof BiscuitError ? new errors.InvalidRequest(err.message) : err;
  }
  const rootJwk = await deps.keys.biscuitRootById(chain.rootKeyId);
  if (!rootJwk) throw new errors.InvalidGrant('the Biscuit\'s root key is no longer published');

  const b = await loadBiscuit();
  const biscuit = b.Biscuit.fromBase64WithProvider(subjectToken, () => biscuitPublicKey(b, biscuitKeyText(rootJwk)));
  const next = appendHop(b, biscuit, hop, chain.current, rootJwk);
  biscuit.free();
  const token = next.toBase64();
  const revocationId = lastRevocationId(next);
  next.free();
  const parent = await recordedAncestor(deps.tokens, chain);
  respond(ctx, token, {
    jti: randomUUID(), type: 'biscuit', sub: chain.authority.subject, client_id: delegate, actor: actOf(chain, delegate), parent_jti: parent?.jti ?? null,
    txn: chain.authority.txn, scope: hop.rights.join(' ') || null, audience: hop.audiences, kid: `${BISCUIT_KID_PREFIX}${chain.rootKeyId}`,
    iat: now, exp: Math.floor(hop.expires.getTime() / 1000), token_hash: tokenHash(token), cnf_jkt: null, revocation_id: revocationId,
  }, now, parent ? { jti: parent.jti, what: 'Biscuit' } : undefined);
}
