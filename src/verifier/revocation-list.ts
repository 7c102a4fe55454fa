/**
 * The issuer's Biscuit revocation list, fetched and kept for the time the server allows (at most
 * `maxAgeMs`). A failed refresh keeps the last list for `staleMs` more; after that, and before any list
 * was fetched, verification fails closed.
 */
export class RevocationList {
  private ids: ReadonlySet<string> | undefined;
  private fetchedAt = 0;
  private ttlMs = 0;
  private inflight: Promise<ReadonlySet<string>> | undefined;

  constructor(private readonly opts: { url: string; maxAgeMs: number; staleMs: number; fetch: typeof fetch }) {}

  async current(): Promise<ReadonlySet<string>> {
    const now = Date.now();
    if (this.ids && now - this.fetchedAt < this.ttlMs) return this.ids;
    try {
      return await (this.inflight ??= this.refresh().finally(() => { this.inflight = undefined; }));
    } catch (err) {
      if (this.ids && now - this.fetchedAt < this.ttlMs + this.opts.staleMs) return this.ids;
      throw err;
    }
  }

  private async refresh(): Promise<ReadonlySet<string>> {
    const res = await this.opts.fetch(this.opts.url, { headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error(`revocation list: HTTP ${res.status}`);
    const body = (await res.json()) as { revocation_ids?: unknown; max_age?: unknown };
    if (!Array.isArray(body.revocation_ids) || body.revocation_ids.some((id) => typeof id !== 'string')) throw new Error('revocation list: malformed');
    this.ids = new Set(body.revocation_ids as string[]);
    this.fetchedAt = Date.now();
    const serverMaxAge = typeof body.max_age === 'number' && body.max_age >= 0 ? body.max_age * 1000 : this.opts.maxAgeMs;
    this.ttlMs = Math.min(serverMaxAge, this.opts.maxAgeMs);
    return this.ids;
  }
}
