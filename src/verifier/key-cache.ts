import { createPublicKey, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { biscuitKeyText, rootKeyIdOf } from '../tokens/biscuit-keys.js';

export interface KeyCacheOptions {
  jwksUri: string;
  /** How long a `kid` that was still unknown after a refetch is refused without fetching again. */
  cooldownMs: number;
  /** Minimum time between two JWKS fetches triggered by unknown `kid`s. */
  minRefetchMs: number;
  /** How long a fetched JWKS is trusted before a refresh. */
  maxAgeMs: number;
  fetch: typeof fetch;
}

interface Entry {
  key: KeyObject;
  alg: string;
  /** For a Biscuit root key: the key in Biscuit's text form. Such a key never verifies a JWT. */
  biscuit?: string;
}

/**
 * The authorization server's public keys, imported once as `KeyObject`s and kept by `kid`. An unknown
 * `kid` triggers a refetch, so a rotation is picked up at its first token; a `kid` still unknown after
 * that is refused without fetching for a cool-down, and refetches are rate-limited, so made-up `kid`s
 * can't make the verifier hammer the server.
 */
export class KeyCache {
  private keys = new Map<string, Entry>();
  private fetchedAt = 0;
  private missFetchedAt = 0;
  private readonly unknown = new Map<string, number>();
  private inflight: Promise<void> | undefined;

  constructor(private readonly opts: KeyCacheOptions) {}

  async get(kid: string): Promise<Entry | undefined> {
    const now = Date.now();
    const known = this.keys.get(kid);
    if (known && now - this.fetchedAt < this.opts.maxAgeMs) return known;
    if (!known && this.fetchedAt) {
      // A new kid (a rotation) triggers a refetch; a kid still unknown after one is refused for the
      // cool-down, and made-up kids can't make us fetch more than once per minRefetchMs.
      if ((this.unknown.get(kid) ?? 0) > now || now - this.missFetchedAt < this.opts.minRefetchMs) return undefined;
      this.missFetchedAt = now;
    }
    await this.refresh();
    const found = this.keys.get(kid);
    if (!found) {
      if (this.unknown.size > 10_000) this.unknown.clear();
      this.unknown.set(kid, now + this.opts.cooldownMs);
    }
    return found;
  }

  /** The cached key without waiting, for the hot path; undefined when a fetch is needed. */
  peek(kid: string): Entry | undefined {
    return Date.now() - this.fetchedAt < this.opts.maxAgeMs ? this.keys.get(kid) : undefined;
  }

  /** Forgets when the keys were fetched, so the next lookup refetches them (the issuer said they changed). */
  invalidate(): void {
    this.fetchedAt = 0;
    this.missFetchedAt = 0;
    this.unknown.clear();
  }

  private refresh(): Promise<void> {
    this.inflight ??= (async () => {
      try {
        const res = await this.opts.fetch(this.opts.jwksUri, { headers: { accept: 'application/json' } });
        if (!res.ok) throw new Error(`JWKS fetch failed: HTTP ${res.status}`);
        const body = (await res.json()) as { keys?: Record<string, unknown>[] };
        const next = new Map<string, Entry>();
        for (const jwk of body.keys ?? []) {
          if (typeof jwk.kid !== 'string' || typeof jwk.alg !== 'string' || 'd' in jwk) continue;
          try {
            const biscuit = rootKeyIdOf(jwk.kid) !== undefined ? biscuitKeyText(jwk as JWK) : undefined;
            next.set(jwk.kid, { key: createPublicKey({ key: jwk as never, format: 'jwk' }), alg: jwk.alg, ...(biscuit ? { biscuit } : {}) });
          } catch { /* skip keys we cannot import */ }
        }
        this.keys = next;
      } finally {
        this.fetchedAt = Date.now();
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }
}
