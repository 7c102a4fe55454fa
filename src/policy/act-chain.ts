import type { ActClaim } from '../tokens/access-token.js';

/** The actors of an `act` chain, current (outermost) first. */
export function actors(act: ActClaim | undefined): string[] {
  const out: string[] = [];
  for (let a = act; a && out.length < 64; a = a.act) out.push(a.sub);
  return out;
}

/** How many delegation hops an `act` chain records. */
export const delegationDepth = (act: ActClaim | undefined) => actors(act).length;

/**
 * The `act` claim of a token `actor` obtains from a subject token: the actor becomes the outermost
 * entry and the subject's chain nests inside. An agent exchanging its own token adds no hop, and an
 * actor exchanging again a token it already acts in does not repeat itself.
 */
export function extendActChain(subjectSub: string, subjectAct: ActClaim | undefined, actor: string): ActClaim | undefined {
  if (!subjectAct && subjectSub === actor) return undefined;
  if (subjectAct?.sub === actor) return subjectAct;
  return { sub: actor, ...(subjectAct ? { act: subjectAct } : {}) };
}

/** RFC 8693 §4.4 `may_act`: when the subject token has one, it must name the actor. */
export function mayActAllows(mayAct: unknown, actor: string): boolean {
  if (mayAct === undefined) return true;
  return !!mayAct && typeof mayAct === 'object' && (mayAct as { sub?: unknown }).sub === actor;
}

/** Reads an `act` claim from untrusted JSON, keeping only `sub` and nested `act`. */
export function readActClaim(value: unknown): ActClaim | undefined {
  if (!value || typeof value !== 'object') return undefined;
  const { sub, act } = value as { sub?: unknown; act?: unknown };
  if (typeof sub !== 'string') return undefined;
  const inner = readActClaim(act);
  return { sub, ...(inner ? { act: inner } : {}) };
}
