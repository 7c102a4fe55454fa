import type { KeyManager } from '../keys/key-manager.js';
import type { AgentsRepo } from '../storage/agents-repo.js';
import type { EventsRepo } from '../storage/events-repo.js';
import type { TokensRepo } from '../storage/tokens-repo.js';
import type { BiscuitChain } from '../tokens/biscuit-chain.js';
import { BiscuitTimeoutError } from '../tokens/biscuit-errors.js';
import { inspectOurBiscuit, recordedAncestor } from './grants/biscuit-exchange.js';

/** What introspection and revocation read and write: keys, token records, agents, decision events, the clock. */
export interface TokenStatusDeps {
  keys: KeyManager;
  tokens: TokensRepo;
  agents: AgentsRepo;
  events: EventsRepo;
  now: () => number;
}
type Deps = TokenStatusDeps;

const B64URL = /^[A-Za-z0-9_-]{16,}={0,2}$/;

/** A token that may be a Biscuit (JWTs have dots; Biscuits are one base64url string). */
export const mayBeBiscuit = (token: string) => B64URL.test(token);

/** The token's chain, or undefined when it is none of ours; a busy machine's Datalog timeout is thrown (answered 503). */
async function chainOf(deps: Deps, token: string): Promise<BiscuitChain | undefined> {
  try {
    return await inspectOurBiscuit(deps, token);
  } catch (err) {
    if (err instanceof BiscuitTimeoutError) throw err;
    return undefined;
  }
}

/** Every agent a chain names: the holder, then each delegate. */
const members = (chain: BiscuitChain) => [chain.authority.holder, ...chain.hops.map((h) => h.delegate)];

/**
 * RFC 7662 answer for a Biscuit: active when its chain verifies with our root key, no block's revocation
 * id is revoked (revoking a token revokes every block appended after it), it is unexpired, and every
 * agent of the chain that is registered here is active.
 */
export async function introspectBiscuit(deps: Deps, token: string): Promise<Record<string, unknown>> {
  const chain = await chainOf(deps, token);
  if (!chain) return { active: false };
  // Every agent of the chain registered here must still be active (a disabled delegator's hand-offs end with it).
  const agents = await Promise.all([...new Set(members(chain))].map((id) => deps.agents.find(id)));
  if (agents.some((a) => a && a.status !== 'active')) return { active: false };
  const { authority, current, hops } = chain;
  let act: Record<string, unknown> | undefined;
  for (const sub of members(chain).slice(0, -1)) act = { sub, ...(act ? { act } : {}) };
  return {
    active: true,
    iss: authority.issuer, sub: authority.subject, client_id: current.holder, jti: authority.tokenId, txn: authority.txn,
    scope: current.rights.join(' '), aud: current.audiences, exp: Math.floor(current.expires.getTime() / 1000),
    ...(act ? { act } : {}), budget: current.budget, delegation_depth: hops.length, max_depth: authority.maxDepth,
    token_type: 'N_A', issued_token_type: 'urn:agent-sts:params:oauth:token-type:biscuit',
  };
}

/**
 * RFC 7009 for a Biscuit: any agent the chain names may revoke it. The revocation id of its last block
 * is revoked (with the record holding it and that record's descendants), so every token built on it is
 * refused too; blocks before it stay valid. Returns false when the client may not revoke it.
 */
export async function revokeBiscuit(deps: Deps, token: string, clientId: string): Promise<boolean> {
  const chain = await chainOf(deps, token);
  if (!chain) return true;
  if (!members(chain).includes(clientId)) return false;
  const last = chain.revocationIds.at(-1)!;
  const record = (await deps.tokens.findByRevocationIds([last]))[0];
  const revoked = record
    ? await deps.tokens.revokeWithDescendants(record.jti, 'revoked by client', undefined, 'user')
    : (await deps.tokens.revokeBiscuitId(last, Math.floor(chain.current.expires.getTime() / 1000), 'revoked by client'), []);
  const parent = record ?? await recordedAncestor(deps.tokens, chain);
  for (const jti of revoked.length ? revoked : [parent?.jti ?? null]) {
    await deps.events.record({ decision: 'revoked', action: 'revocation', client_id: clientId, jti, reason: 'revoked by client', ...(revoked.length ? {} : { detail: `revocation id ${last}` }) });
  }
  return true;
}
