/** Remembers one-time identifiers (DPoP proof and WPT `jti`s) until they expire. */
export interface ReplayCache {
  /** True the first time `id` is seen before `expiresAt` (epoch seconds); false on a replay. */
  claim(id: string, expiresAt: number): boolean | Promise<boolean>;
}

/** An in-process replay cache, bounded in size; share one per process (or plug a shared store for several). */
export class MemoryReplayCache implements ReplayCache {
  private readonly seen = new Map<string, number>();

  constructor(private readonly maxEntries = 100_000) {}

  claim(id: string, expiresAt: number): boolean {
    const now = Math.floor(Date.now() / 1000);
    const known = this.seen.get(id);
    if (known !== undefined && known > now) return false;
    if (this.seen.size >= this.maxEntries) {
      for (const [k, exp] of this.seen) {
        if (exp <= now || this.seen.size >= this.maxEntries) this.seen.delete(k);
        if (this.seen.size < this.maxEntries * 0.9) break;
      }
    }
    this.seen.set(id, expiresAt);
    return true;
  }
}
