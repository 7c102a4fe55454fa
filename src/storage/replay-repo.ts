import { createHash } from 'node:crypto';
import type { Knex } from 'knex';

/** One-time identifiers (assertion and proof `jti`s): the first use is recorded atomically, every later use refused. */
export class ReplayRepo {
  private lastSweep = 0;

  constructor(private readonly db: Knex, private readonly now: () => number) {}

  /** True when `jti` was not seen before from `issuer` (and is now recorded until `expiresAt`). */
  async claim(issuer: string, jti: string, expiresAt: number): Promise<boolean> {
    const id = createHash('sha256').update(issuer).update('\n').update(jti).digest('base64url');
    const now = this.now();
    if (now - this.lastSweep > 60) {
      this.lastSweep = now;
      await this.db('replay_cache').where('expires_at', '<', now).delete();
    }
    // A signed `exp` may be fractional or far beyond what a bigint holds: keep the entry at least that long.
    const until = Number.isFinite(expiresAt) ? Math.min(Math.ceil(expiresAt), Number.MAX_SAFE_INTEGER) : Number.MAX_SAFE_INTEGER;
    const rows = await this.db('replay_cache').insert({ id, expires_at: Math.max(until, now + 1) }).onConflict('id').ignore().returning('id');
    return rows.length === 1;
  }
}
