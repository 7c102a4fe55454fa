/** Remembers one-time identifiers (DPoP proof and WPT `jti`s) for as long as their credential can be accepted. */
export interface ReplayCache {
  /**
   * True the first time `id` is seen; false while an earlier claim of it is live, that is through
   * `acceptedUntil` (epoch seconds, inclusive: the last second at which the credential can still be accepted,
   * its expiry plus the clock tolerance). A store that cannot remember one more identifier must throw (the
   * verifier then refuses the request) rather than forget a live one.
   */
  claim(id: string, acceptedUntil: number): boolean | Promise<boolean>;
}

/** A replay cache is full of live entries: the request is refused until some expire. */
export class ReplayCacheFullError extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super('the replay cache is full');
    this.name = 'ReplayCacheFullError';
  }
}

/**
 * An in-process replay cache, bounded in size; share one per process (or plug a shared store for several).
 * When it is full of live entries it refuses new claims with {@link ReplayCacheFullError} rather than evict
 * one: an evicted identifier could be replayed.
 */
export class MemoryReplayCache implements ReplayCache {
  private readonly seen = new Map<string, number>();
  /** No entry expires before this second, so sweeping earlier frees nothing. */
  private earliest = Infinity;

  constructor(private readonly maxEntries = 100_000, private readonly now: () => number = () => Math.floor(Date.now() / 1000)) {}

  claim(id: string, acceptedUntil: number): boolean {
    const now = this.now();
    const known = this.seen.get(id);
    if (known !== undefined && known >= now) return false;
    if (known !== undefined) this.seen.delete(id);
    if (this.seen.size >= this.maxEntries) this.sweep(now);
    if (this.seen.size >= this.maxEntries) throw new ReplayCacheFullError(Math.max(1, this.earliest + 1 - now));
    // A fractional or absurd `exp` keeps the entry at least that long.
    const until = Number.isFinite(acceptedUntil) ? Math.ceil(acceptedUntil) : Number.MAX_SAFE_INTEGER;
    this.seen.set(id, until);
    if (until < this.earliest) this.earliest = until;
    return true;
  }

  /** Drops the entries whose credentials can no longer be accepted. */
  private sweep(now: number): void {
    if (this.earliest >= now) return;
    let earliest = Infinity;
    for (const [id, until] of this.seen) {
      if (until < now) this.seen.delete(id);
      else if (until < earliest) earliest = until;
    }
    this.earliest = earliest;
  }
}
