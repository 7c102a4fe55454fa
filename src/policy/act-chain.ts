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

/** An `act` claim that is no chain of actors: refused, never read in part. */
export class MalformedActClaim extends Error {}

/**
 * Reads the `act` claim of a presented token (untrusted JSON), keeping only `sub` and nested `act`: `undefined`
 * when there is none. Every entry of the nesting must be an object with a string `sub`, and the nesting at most
 * `maxEntries` deep (the server's maximum delegation depth + 1): anything else is refused ({@link MalformedActClaim})
 * rather than cut short, since a truncated chain would undercount the delegation depth.
 */
export function readActClaim(value: unknown, maxEntries: number): ActClaim | undefined {
  if (value === undefined) return undefined;
  const subs: string[] = [];
  for (let entry: unknown = value; entry !== undefined; entry = (entry as { act?: unknown }).act) {
    const sub = entry && typeof entry === 'object' && !Array.isArray(entry) ? (entry as { sub?: unknown }).sub : undefined;
    if (typeof sub !== 'string') throw new MalformedActClaim('malformed act claim: every entry of the chain must be an object with a string sub');
    if (subs.length >= maxEntries) throw new MalformedActClaim(`malformed act claim: nested deeper than ${maxEntries} entries`);
    subs.push(sub);
  }
  return subs.reduceRight<ActClaim | undefined>((inner, sub) => ({ sub, ...(inner ? { act: inner } : {}) }), undefined);
}
