/** A request that would widen what the subject or the requester holds, or that nothing is left to narrow (an expired subject); `code` is the OAuth error. */
export class NarrowingError extends Error {
  constructor(readonly code: 'invalid_scope' | 'invalid_target' | 'invalid_request' | 'invalid_grant', message: string) {
    super(message);
    this.name = 'NarrowingError';
  }
}

const split = (scope: string | undefined) => new Set((scope ?? '').split(' ').filter(Boolean));

/**
 * The scope of an exchanged token: every requested scope must be held by the subject token and be
 * one of the requester's allowed scopes. Without a request, what both allow. A `null` subject scope
 * (an external identity token, which carries none) holds whatever the requester is allowed.
 */
export function narrowScope(requested: string | undefined, subjectScope: string | undefined | null, allowed: readonly string[] | undefined): string | undefined {
  const held = subjectScope === null ? new Set(allowed ?? []) : split(subjectScope);
  const mayHave = allowed ? new Set(allowed) : undefined;
  if (requested !== undefined) {
    const wanted = [...split(requested)];
    const notHeld = wanted.filter((s) => !held.has(s));
    if (notHeld.length) throw new NarrowingError('invalid_scope', `scope not held by the subject token: ${notHeld.join(' ')}`);
    const notAllowed = mayHave ? wanted.filter((s) => !mayHave.has(s)) : [];
    if (notAllowed.length) throw new NarrowingError('invalid_scope', `scope not allowed for this agent: ${notAllowed.join(' ')}`);
    return wanted.join(' ') || undefined;
  }
  return [...held].filter((s) => !mayHave || mayHave.has(s)).join(' ') || undefined;
}

/** The one audience of an exchanged token: one of the requester's registered audiences, the first by default. */
export function chooseAudience(requested: string[], registered: readonly string[]): string {
  if (requested.length > 1) throw new NarrowingError('invalid_target', 'ask for one audience (resource or audience) per exchange');
  const [wanted] = requested;
  if (wanted === undefined) {
    if (!registered[0]) throw new NarrowingError('invalid_target', 'audience is required: this agent has no registered audience');
    return registered[0];
  }
  if (!registered.includes(wanted)) throw new NarrowingError('invalid_target', `audience ${JSON.stringify(wanted)} is not a registered audience of this agent`);
  return wanted;
}

/**
 * A token never outlives the token it was exchanged from: the earlier of the two, in whole seconds (a subject
 * from another issuer may carry a fractional `exp`). A subject accepted within the clock tolerance past its
 * expiry, or expiring this second, leaves no lifetime to give: refused rather than issued already expired.
 */
export function narrowExpiry(wanted: number, subjectExp: number, now: number): number {
  const exp = Math.floor(Math.min(wanted, subjectExp));
  if (exp <= now) throw new NarrowingError('invalid_grant', 'the presented token has expired');
  return exp;
}

/** Adds keys to a context object; a key already present may not change. */
export function extendContext(base: Record<string, unknown> | undefined, added: Record<string, unknown> | undefined, name: string): Record<string, unknown> | undefined {
  if (!added) return base;
  const out = { ...(base ?? {}) };
  for (const [k, v] of Object.entries(added)) {
    if (k in out && JSON.stringify(out[k]) !== JSON.stringify(v)) throw new NarrowingError('invalid_request', `${name} may only add to the transaction's context: ${k} is already set`);
    out[k] = v;
  }
  return out;
}
