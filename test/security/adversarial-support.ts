/**
 * Bookkeeping for the adversarial suite: every attack attempt and every valid control is recorded with
 * its category, a key naming its generated variant (each must be distinct within its category), and
 * what happened to it; the ledger prints the table and lists what went wrong.
 */
import { request as httpRequest } from 'node:http';
import fc from 'fast-check';
import { VerificationError } from '../../src/verifier/errors.js';
import { BiscuitError } from '../../src/tokens/biscuit-errors.js';
import { guardRequest, type GuardOptions } from '../../src/verifier/middleware.js';
import type { HttpRequestLike, Verifier } from '../../src/verifier/verifier.js';

/** Seed of every generator in the suite; ADVERSARIAL_SEED replays another. */
export const SEED = process.env.ADVERSARIAL_SEED !== undefined ? Number(process.env.ADVERSARIAL_SEED) : 0x5eed2025;

/** What an attempt came to: refused (with the kind of refusal seen) or not (accepted, or a crash / 5xx). */
export type Outcome = { refused: true; by: string; detail?: string } | { refused: false; detail: string };

interface Row {
  category: string;
  where: Set<string>;
  attempts: number;
  refused: number;
  by: Map<string, number>;
  controls: number;
  accepted: number;
  attackKeys: Set<string>;
  controlKeys: Set<string>;
}

export class Ledger {
  readonly rows = new Map<string, Row>();
  /** Every attempt not refused the right way and every control not accepted, with why. */
  readonly failures: string[] = [];

  private row(category: string): Row {
    let r = this.rows.get(category);
    if (!r) {
      r = { category, where: new Set(), attempts: 0, refused: 0, by: new Map(), controls: 0, accepted: 0, attackKeys: new Set(), controlKeys: new Set() };
      this.rows.set(category, r);
    }
    return r;
  }

  /**
   * Records an attack: it must be refused, and with one of the refusals `expected` allows (a pattern
   * over the `by` label, e.g. /^invalid_token \(401\)$/).
   */
  attack(category: string, where: string, variant: string, outcome: Outcome, expected: RegExp): void {
    const r = this.row(category);
    r.where.add(where);
    if (r.attackKeys.has(variant)) this.failures.push(`${category}: variant attempted twice: ${variant.slice(0, 200)}`);
    r.attackKeys.add(variant);
    r.attempts++;
    if (!outcome.refused) {
      this.failures.push(`${category} [${where}]: NOT REFUSED (${outcome.detail}): ${variant.slice(0, 300)}`);
      return;
    }
    if (!expected.test(outcome.by)) {
      this.failures.push(`${category} [${where}]: refused the wrong way (${outcome.by}${outcome.detail ? `: ${outcome.detail}` : ''}; expected ${expected}): ${variant.slice(0, 300)}`);
      return;
    }
    r.refused++;
    r.by.set(outcome.by, (r.by.get(outcome.by) ?? 0) + 1);
  }

  /** Records a valid control of the category: it must be accepted. */
  control(category: string, variant: string, accepted: boolean, detail = ''): void {
    const r = this.row(category);
    if (r.controlKeys.has(variant)) this.failures.push(`${category}: control variant used twice: ${variant.slice(0, 200)}`);
    r.controlKeys.add(variant);
    r.controls++;
    if (accepted) r.accepted++;
    else this.failures.push(`${category}: CONTROL REFUSED (${detail}): ${variant.slice(0, 300)}`);
  }

  totals() {
    let attempts = 0, refused = 0, controls = 0, accepted = 0;
    for (const r of this.rows.values()) {
      attempts += r.attempts;
      refused += r.refused;
      controls += r.controls;
      accepted += r.accepted;
    }
    return { attempts, refused, controls, accepted, categories: [...this.rows.values()].filter((r) => r.attempts > 0).length };
  }

  /** The table: one line per category, then the totals and the controls line. */
  table(): string {
    const lines: string[][] = [['category', 'where', 'attempts', 'refused', 'refused by', 'controls', 'accepted']];
    for (const r of this.rows.values()) {
      const by = [...r.by.entries()].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ×${n}`).join(', ');
      lines.push([r.category, [...r.where].join(', '), String(r.attempts), String(r.refused), by, String(r.controls), String(r.accepted)]);
    }
    const t = this.totals();
    const widths = lines[0]!.map((_, i) => Math.min(i === 4 ? 90 : 48, Math.max(...lines.map((l) => l[i]!.length))));
    const fmt = (l: string[]) => `| ${l.map((c, i) => (i === 2 || i === 3 || i >= 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
    return [
      fmt(lines[0]!),
      `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
      ...lines.slice(1).map(fmt),
      '',
      `attacks: ${t.attempts} attempts in ${t.categories} categories, ${t.refused} refused the right way`,
      `controls: ${t.controls} valid requests, ${t.accepted} accepted`,
    ].join('\n');
  }
}

/** `n` distinct samples of an arbitrary (distinct by `key`), reproducibly from `seed`. */
export function variants<T>(arb: fc.Arbitrary<T>, n: number, seed: number, key: (v: T) => string = (v) => JSON.stringify(v)): T[] {
  const out = new Map<string, T>();
  for (let round = 0; out.size < n && round < 20; round++) {
    for (const v of fc.sample(arb, { seed: seed + round * 7919, numRuns: n * 2 })) {
      if (out.size >= n) break;
      if (!out.has(key(v))) out.set(key(v), v);
    }
  }
  if (out.size < n) throw new Error(`only ${out.size} distinct variants of ${n} could be generated`);
  return [...out.values()];
}

/** Runs `fn` over `items`, at most `concurrency` at a time. */
export async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  }));
}

/** A request through the framework-free guard the koa and Express middleware use. */
export async function throughGuard(verifier: Verifier, req: HttpRequestLike, opts: GuardOptions = {}): Promise<Outcome> {
  try {
    const outcome = await guardRequest(verifier, req, opts);
    if (outcome.ok) return { refused: false, detail: 'accepted' };
    const challenge = outcome.headers['www-authenticate'] ?? '';
    // RFC 6750 §3 / RFC 9449 §7.1: a challenge naming the error (none only when no credentials came at all).
    const named = /error="([^"]*)"/.exec(challenge)?.[1];
    if (!/^(Bearer|DPoP)\b/.test(challenge) || (named !== undefined && named !== outcome.body?.error)) {
      return { refused: true, by: `${outcome.body?.error} (${outcome.status}) without its challenge` };
    }
    return { refused: true, by: `${outcome.body?.error} (${outcome.status})`, detail: outcome.body?.error_description };
  } catch (err) {
    return { refused: false, detail: `threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}` };
  }
}

/** A Biscuit library call: refused only by a BiscuitError; anything else thrown is a crash. */
export async function biscuitOutcome(fn: () => Promise<unknown>): Promise<Outcome> {
  try {
    await fn();
    return { refused: false, detail: 'accepted' };
  } catch (err) {
    if (err instanceof BiscuitError) return { refused: true, by: `BiscuitError:${err.failure}`, detail: err.message };
    return { refused: false, detail: `crashed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}` };
  }
}

/** A verifier call that must throw a VerificationError. */
export async function verifierOutcome(fn: () => Promise<unknown>): Promise<Outcome> {
  try {
    await fn();
    return { refused: false, detail: 'accepted' };
  } catch (err) {
    if (err instanceof VerificationError) return { refused: true, by: `${err.code} (${err.status})`, detail: err.message };
    return { refused: false, detail: `threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}` };
  }
}

export interface HttpResult { status: number; body: any; headers: Headers | Record<string, string | string[] | undefined> }

const headerOf = (h: HttpResult['headers'], name: string): string | undefined => {
  if (h instanceof Headers) return h.get(name) ?? undefined;
  const v = h[name];
  return Array.isArray(v) ? v.join(', ') : v;
};

/**
 * An HTTP response to an attack: refused when it is a 4xx with a JSON `error` (OAuth endpoints also
 * `Cache-Control: no-store`, resource servers a `WWW-Authenticate` challenge); a 2xx is acceptance and a
 * 5xx or anything without an error body is a failure.
 */
export function httpOutcome(res: HttpResult, opts: { oauth?: boolean; challenge?: boolean; bodyless?: boolean } = {}): Outcome {
  if (res.status >= 200 && res.status < 300) return { refused: false, detail: `${res.status} ${JSON.stringify(res.body).slice(0, 200)}` };
  if (res.status >= 500 || res.status < 400) return { refused: false, detail: `${res.status} ${JSON.stringify(res.body).slice(0, 300)}` };
  const error = res.body && typeof res.body === 'object' && typeof res.body.error === 'string' ? res.body.error as string : undefined;
  if (!error) return opts.bodyless ? { refused: true, by: `${res.status}` } : { refused: false, detail: `${res.status} without an error body: ${String(res.body).slice(0, 200)}` };
  if (opts.oauth && !/no-store/.test(headerOf(res.headers, 'cache-control') ?? '')) return { refused: true, by: `${error} (${res.status}) without Cache-Control: no-store` };
  if (opts.challenge && !headerOf(res.headers, 'www-authenticate')) return { refused: true, by: `${error} (${res.status}) without WWW-Authenticate` };
  return { refused: true, by: `${error} (${res.status})`, detail: typeof res.body.error_description === 'string' ? res.body.error_description : undefined };
}

/** A raw HTTP request: request target, Host and body exactly as given. */
export function rawRequest(port: number, opts: { method?: string; path: string; headers?: Record<string, string | string[]>; body?: Buffer | string }): Promise<{ status: number; body: any; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve) => {
    const body = opts.body === undefined ? undefined : Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(opts.body);
    const headers = { ...(opts.headers ?? {}), ...(body ? { 'content-length': String(body.length) } : {}) };
    const req = httpRequest({ host: '127.0.0.1', port, path: opts.path, method: opts.method ?? 'GET', headers, setHost: !('host' in headers), agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = text ? JSON.parse(text) : undefined;
        } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
      });
    });
    req.on('error', (err) => resolve({ status: 0, body: `connection error: ${err.message}`, headers: {} }));
    req.end(body);
  });
}
