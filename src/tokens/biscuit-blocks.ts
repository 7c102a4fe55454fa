/**
 * The Datalog vocabulary of agent-sts Biscuit tokens: what the authority block and each delegation
 * block say, and the request facts a verifier supplies. Values only ever enter Datalog as parameters.
 *
 * Authority block (signed by the server's root key):
 *   issuer(iss) subject(sub) token_id(jti) txn(txn) holder(id) [holder_key(key)]
 *   rights({tools}) audiences({audiences}) budget(cents) max_depth(n) expires(date)
 *   checks binding every request: time <= expires; reject any tool not in rights, any resource not in
 *   audiences, any spend over budget.
 * Delegation block i (a third-party block signed by the key of the previous block's delegate, or by the
 * root key when the server appended it for an authenticated delegator):
 *   hop(i, delegator, delegate, context) [hop_key(i, key)]
 *   hop_rights(i, {tools}) hop_audiences(i, {audiences}) hop_budget(i, cents) hop_expires(i, date)
 *   and the same four checks with the hop's own limits.
 * Request facts (the verifier's): time(now), tool(name)*, resource(uri), spend(cents)?
 */

/** Token type URN (spec section 7) used in token exchange. */
export const BISCUIT_TOKEN_TYPE = 'urn:agent-sts:params:oauth:token-type:biscuit';

/** What a block allows: every request must stay inside every block's limits. */
export interface BiscuitLimits {
  rights: string[];
  audiences: string[];
  /** Spending ceiling in integer cents. */
  budget: number;
  expires: Date;
}

export interface AuthorityFacts extends BiscuitLimits {
  issuer: string;
  subject: string;
  tokenId: string;
  txn: string;
  /** The first delegator: the agent the token was minted for. */
  holder: string;
  /** The holder's public key in Biscuit text form, when it can sign delegation blocks offline. */
  holderKey?: string;
  maxDepth: number;
}

export interface HopFacts extends BiscuitLimits {
  index: number;
  delegator: string;
  delegate: string;
  /** The delegate's public key in Biscuit text form, when it may delegate further offline. */
  delegateKey?: string;
  /** Why the authority is handed on; never empty. */
  context: string;
}

// `reject if` holds when nothing matches (a request without a tool or spend); `check all` would not.
const LIMIT_CHECKS = `
check if time($t), $t <= {expires};
reject if tool($t), !{rights}.contains($t);
reject if resource($r), !{audiences}.contains($r);
reject if spend($c), $c > {budget};`;

const limitParams = (l: BiscuitLimits) => ({ rights: new Set(l.rights), audiences: new Set(l.audiences), budget: l.budget, expires: l.expires });

export function authorityBlock(a: AuthorityFacts): { code: string; params: Record<string, unknown> } {
  return {
    code: `issuer({issuer}); subject({subject}); token_id({token_id}); txn({txn}); holder({holder});${a.holderKey ? ' holder_key({holder_key});' : ''}
rights({rights}); audiences({audiences}); budget({budget}); max_depth({max_depth}); expires({expires});${LIMIT_CHECKS}`,
    params: {
      issuer: a.issuer, subject: a.subject, token_id: a.tokenId, txn: a.txn, holder: a.holder, max_depth: a.maxDepth, ...limitParams(a),
      ...(a.holderKey ? { holder_key: a.holderKey } : {}),
    },
  };
}

export function hopBlock(h: HopFacts): { code: string; params: Record<string, unknown> } {
  return {
    code: `hop({i}, {delegator}, {delegate}, {context});${h.delegateKey ? ' hop_key({i}, {delegate_key});' : ''}
hop_rights({i}, {rights}); hop_audiences({i}, {audiences}); hop_budget({i}, {budget}); hop_expires({i}, {expires});${LIMIT_CHECKS}`,
    params: {
      i: h.index, delegator: h.delegator, delegate: h.delegate, context: h.context, ...limitParams(h),
      ...(h.delegateKey ? { delegate_key: h.delegateKey } : {}),
    },
  };
}

/** What a verifier is asked to allow. */
export interface BiscuitRequest {
  /** Tools (or scopes) the request uses. */
  tools?: string[];
  /** The resource (audience) the token is presented to. */
  resource?: string;
  /** What the request spends, in integer cents. */
  spend?: number;
  now: Date;
}

export function requestFacts(r: BiscuitRequest): { code: string; params: Record<string, unknown> } {
  const tools = r.tools ?? [];
  const parts = ['time({now});', ...tools.map((_, i) => `tool({tool${i}});`)];
  const params: Record<string, unknown> = { now: r.now };
  tools.forEach((t, i) => { params[`tool${i}`] = t; });
  if (r.resource !== undefined) {
    parts.push('resource({resource});');
    params.resource = r.resource;
  }
  if (r.spend !== undefined) {
    parts.push('spend({spend});');
    params.spend = r.spend;
  }
  return { code: parts.join(' '), params };
}

/** Queries that read the chain back; `trusting` scopes name the key a block must be signed with. */
export const AUTHORITY_QUERY = 'authority($iss, $sub, $jti, $txn, $holder, $rights, $aud, $budget, $depth, $exp) <- issuer($iss), subject($sub), token_id($jti), txn($txn), holder($holder), rights($rights), audiences($aud), budget($budget), max_depth($depth), expires($exp)';
export const HOLDER_KEY_QUERY = 'holder_key($k) <- holder_key($k)';
export const HOPS_QUERY = 'hop($i, $from, $to, $ctx, $rights, $aud, $budget, $exp) <- hop($i, $from, $to, $ctx), hop_rights($i, $rights), hop_audiences($i, $aud), hop_budget($i, $budget), hop_expires($i, $exp) trusting {signer}';
export const HOP_KEYS_QUERY = 'hop_key($i, $k) <- hop_key($i, $k) trusting {signer}';
/** Every hop index a signer's blocks declare, complete or not, to find blocks out of place. */
export const HOP_INDEX_QUERY = 'index($i) <- hop($i, $from, $to, $ctx) trusting {signer}';
