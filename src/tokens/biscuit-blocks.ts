/**
 * The Datalog vocabulary of agent-sts Biscuit tokens: what the authority block and each delegation
 * block say, and the request facts a verifier supplies. Values only ever enter Datalog as parameters.
 *
 * Authority block (signed by the server's root key):
 *   issuer(iss) subject(sub) token_id(jti) txn(txn) holder(id) [holder_key(key bytes)]
 *   rights({tools}) audiences({audiences}) budget(cents) max_depth(n) expires(date)
 *   checks binding every request: time <= expires; reject any tool not in rights, any resource not in
 *   audiences, any spend over budget.
 * Delegation block i (a third-party block signed by the key of the previous block's delegate, or by the
 * root key when the server appended it for an authenticated delegator):
 *   hop(i, delegator, delegate, context) [hop_key(i, key bytes)]
 *   narrow(i, "tools", {tools}) narrow(i, "audiences", {audiences}) narrow(i, "budget", cents)
 *   narrow(i, "expires", date) — each only when the hop narrows it (left out, it stays as before) —
 *   each with its check. Keys are raw bytes: 32 for Ed25519, 33 (compressed point) for P-256.
 * Request facts (the verifier's): time(now), tool(name)*, resource(uri), spend(cents)?
 */

/** Token type URN (docs/wire-formats.md §7) used in token exchange. */
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
  /** The holder's public key (Biscuit text form), when it can sign delegation blocks offline. */
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
const CHECKS = {
  expires: 'check if time($t), $t <= {expires};',
  rights: 'reject if tool($t), !{rights}.contains($t);',
  audiences: 'reject if resource($r), !{audiences}.contains($r);',
  budget: 'reject if spend($c), $c > {budget};',
};
const LIMIT_CHECKS = `\n${Object.values(CHECKS).join('\n')}`;

const limitParams = (l: BiscuitLimits) => ({ rights: new Set(l.rights), audiences: new Set(l.audiences), budget: l.budget, expires: l.expires });

/** The `narrow` fact name of each limit. */
export const NARROW_NAMES = { rights: 'tools', audiences: 'audiences', budget: 'budget', expires: 'expires' } as const;
type Limit = keyof typeof NARROW_NAMES;

const sameSet = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x) => b.includes(x));
const unchanged: Record<Limit, (h: BiscuitLimits, p: BiscuitLimits) => boolean> = {
  rights: (h, p) => sameSet(h.rights, p.rights),
  audiences: (h, p) => sameSet(h.audiences, p.audiences),
  budget: (h, p) => h.budget === p.budget,
  expires: (h, p) => h.expires.getTime() === p.expires.getTime(),
};

/** A key in Biscuit text form as the bytes blocks store (32 for Ed25519, 33 for a compressed P-256 point). */
export const keyBytes = (text: string): Uint8Array => Buffer.from(text.slice(text.indexOf('/') + 1), 'hex');

/** Stored key bytes (the library returns byte terms as arrays of numbers) back in Biscuit text form; undefined for anything else. */
export function keyTextOf(value: unknown): string | undefined {
  const bytes = value instanceof Uint8Array ? value : Array.isArray(value) && value.length <= 33 && value.every((x) => Number.isInteger(x) && x >= 0 && x <= 255) ? Uint8Array.from(value as number[]) : undefined;
  if (!bytes) return undefined;
  const hex = Buffer.from(bytes).toString('hex');
  if (bytes.length === 32) return `ed25519/${hex}`;
  if (bytes.length === 33 && (bytes[0] === 2 || bytes[0] === 3)) return `secp256r1/${hex}`;
  return undefined;
}

export function authorityBlock(a: AuthorityFacts): { code: string; params: Record<string, unknown> } {
  return {
    code: `issuer({issuer}); subject({subject}); token_id({token_id}); txn({txn}); holder({holder});${a.holderKey ? ' holder_key({holder_key});' : ''}
rights({rights}); audiences({audiences}); budget({budget}); max_depth({max_depth}); expires({expires});${LIMIT_CHECKS}`,
    params: {
      issuer: a.issuer, subject: a.subject, token_id: a.tokenId, txn: a.txn, holder: a.holder, max_depth: a.maxDepth, ...limitParams(a),
      ...(a.holderKey ? { holder_key: keyBytes(a.holderKey) } : {}),
    },
  };
}

/**
 * A delegation block: the hop, the delegate's key, and a `narrow` fact with its check for each limit that
 * differs from `parent` (every limit when no parent is given).
 */
export function hopBlock(h: HopFacts, parent?: BiscuitLimits): { code: string; params: Record<string, unknown> } {
  const parts = ['hop({i}, {delegator}, {delegate}, {context});'];
  if (h.delegateKey) parts.push('hop_key({i}, {delegate_key});');
  for (const limit of Object.keys(NARROW_NAMES) as Limit[]) {
    if (parent && unchanged[limit](h, parent)) continue;
    parts.push(`narrow({i}, "${NARROW_NAMES[limit]}", {${limit}});`, CHECKS[limit]);
  }
  return {
    code: parts.join(' '),
    params: {
      i: h.index, delegator: h.delegator, delegate: h.delegate, context: h.context, ...limitParams(h),
      ...(h.delegateKey ? { delegate_key: keyBytes(h.delegateKey) } : {}),
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
export const HOPS_QUERY = 'hop($i, $from, $to, $ctx) <- hop($i, $from, $to, $ctx) trusting {signer}';
export const NARROW_QUERY = 'narrow($i, $what, $value) <- narrow($i, $what, $value) trusting {signer}';
export const HOP_KEYS_QUERY = 'hop_key($i, $k) <- hop_key($i, $k) trusting {signer}';
