import { createHash } from 'node:crypto';
import type { Knex } from 'knex';

/**
 * One-time identifiers (assertion and proof `jti`s): the first use is recorded atomically, every later use refused.
 * An entry is kept through the last second at which its credential can still be accepted (the caller passes its
 * `exp` plus the clock tolerance the verification allowed, on the clock that verification used), and swept only after that.
 */
export class ReplayRepo {
  private lastSweep = 0;

  constructor(private readonly db: Knex, private readonly now: () => number) {}

  /** True when `jti` was not seen before from `issuer` (and is now recorded through `acceptedUntil`, epoch seconds). */
  async claim(issuer: string, jti: string, acceptedUntil: number): Promise<boolean> {
    const id = createHash('sha256').update(issuer).update('\n').update(jti).digest('base64url');
    const now = this.now();
    if (now - this.lastSweep > 60) {
      this.lastSweep = now;
      // oidc-provider's entries (client assertions, DPoP proofs) are on the system clock, ours on `now`: the
      // same clock in production, a moved one in tests. An entry goes only once both clocks have passed it.
      await this.db('replay_cache').where('expires_at', '<', Math.min(now, Math.floor(Date.now() / 1000))).delete();
    }
    // A signed `exp` may be fractional or far beyond what a bigint holds: keep the entry at least that long.
    // Rows are swept once `expires_at < now`, so the entry still refuses at `acceptedUntil` itself.
    const until = Number.isFinite(acceptedUntil) ? Math.min(Math.ceil(acceptedUntil), Number.MAX_SAFE_INTEGER) : Number.MAX_SAFE_INTEGER;
    const rows = await this.db('replay_cache').insert({ id, expires_at: Math.max(until, now + 1) }).onConflict('id').ignore().returning('id');
    return rows.length === 1;
  }
}
