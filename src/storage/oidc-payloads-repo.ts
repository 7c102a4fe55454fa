import type { Knex } from 'knex';
import { hasNul } from './text.js';

/** Storage for what oidc-provider persists through its adapter (one row per model instance). */
export class OidcPayloadsRepo {
  constructor(private readonly db: Knex, private readonly now: () => number) {}

  async upsert(model: string, id: string, payload: Record<string, unknown>, expiresIn: number | undefined): Promise<void> {
    await this.db('oidc_payloads').insert({
      model,
      id,
      payload: JSON.stringify(payload),
      grant_id: (payload.grantId as string | undefined) ?? null,
      uid: (payload.uid as string | undefined) ?? null,
      user_code: (payload.userCode as string | undefined) ?? null,
      expires_at: expiresIn ? this.now() + expiresIn : null,
    }).onConflict(['model', 'id']).merge();
  }

  async find(model: string, column: 'id' | 'uid' | 'user_code', value: string): Promise<Record<string, unknown> | undefined> {
    if (typeof value !== 'string' || hasNul(value)) return undefined;
    const row = await this.db('oidc_payloads')
      .where({ model, [column]: value })
      .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', this.now()))
      .first('payload');
    return row ? (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) : undefined;
  }

  async consume(model: string, id: string): Promise<void> {
    await this.db('oidc_payloads').where({ model, id }).update({
      payload: this.db.raw(`jsonb_set(payload, '{consumed}', to_jsonb(?::bigint))`, [this.now()]),
    });
  }

  async destroy(model: string, id: string): Promise<void> {
    await this.db('oidc_payloads').where({ model, id }).delete();
  }

  async revokeByGrantId(model: string, grantId: string): Promise<void> {
    await this.db('oidc_payloads').where({ model, grant_id: grantId }).delete();
  }
}
