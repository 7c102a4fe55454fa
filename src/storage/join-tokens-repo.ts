import type { Knex } from 'knex';

export type JoinTokenRedemption = { ok: true } | { ok: false; reason: 'unknown' | 'used' | 'expired' | 'other_agent' };

/** One-time bootstrap tokens for WIT attestation, stored by hash. */
export class JoinTokensRepo {
  constructor(private readonly db: Knex) {}

  async insert(tokenHash: string, agentId: string, expiresAt: number): Promise<void> {
    await this.db('join_tokens').insert({ token_hash: tokenHash, agent_id: agentId, expires_at: expiresAt });
  }

  /** Marks the token used in one statement, so two concurrent redemptions can't both succeed. */
  async redeem(tokenHash: string, agentId: string, now: number): Promise<JoinTokenRedemption> {
    const rows = await this.db('join_tokens')
      .where({ token_hash: tokenHash, agent_id: agentId })
      .whereNull('used_at')
      .andWhere('expires_at', '>', now)
      .update({ used_at: this.db.fn.now() })
      .returning('token_hash');
    if (rows.length === 1) return { ok: true };
    const row = await this.db('join_tokens').where({ token_hash: tokenHash }).first();
    if (!row) return { ok: false, reason: 'unknown' };
    if (row.agent_id !== agentId) return { ok: false, reason: 'other_agent' };
    if (row.used_at) return { ok: false, reason: 'used' };
    return { ok: false, reason: 'expired' };
  }
}
