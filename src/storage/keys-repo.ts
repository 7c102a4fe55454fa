import type { Knex } from 'knex';

export interface SigningKeyRow {
  kid: string;
  alg: string;
  public_jwk: Record<string, unknown>;
  private_jwk: string;
  encrypted: boolean;
  status: 'next' | 'active' | 'retired';
  /** For a `next` key: when it starts signing (epoch seconds). */
  activate_at: number | null;
  created_at: string;
  retired_at: string | null;
}

function fromRow(row: Record<string, unknown>): SigningKeyRow {
  const r = row as unknown as SigningKeyRow;
  return {
    ...r,
    created_at: new Date(row.created_at as string).toISOString(),
    retired_at: row.retired_at ? new Date(row.retired_at as string).toISOString() : null,
  };
}

export class KeysRepo {
  constructor(private readonly db: Knex) {}

  async active(trx: Knex = this.db): Promise<SigningKeyRow[]> {
    return (await trx('signing_keys').where({ status: 'active' }).orderBy('created_at', 'desc')).map(fromRow);
  }

  /** Keys published but not yet signing. */
  async pending(trx: Knex = this.db): Promise<SigningKeyRow[]> {
    return (await trx('signing_keys').where({ status: 'next' }).orderBy('created_at', 'desc')).map(fromRow);
  }

  /** Next and active keys, and retired keys that signed a token which has not yet expired. */
  async published(nowSec: number): Promise<SigningKeyRow[]> {
    const rows = await this.db('signing_keys as k')
      .whereIn('k.status', ['next', 'active'])
      .orWhereExists((q) => q.select(this.db.raw('1')).from('issued_tokens as t').whereRaw('t.kid = k.kid').andWhere('t.exp', '>', nowSec))
      .orderBy('k.created_at', 'desc');
    return rows.map(fromRow);
  }

  async find(kid: string): Promise<SigningKeyRow | undefined> {
    const row = await this.db('signing_keys').where({ kid }).first();
    return row ? fromRow(row) : undefined;
  }

  async all(): Promise<SigningKeyRow[]> {
    return (await this.db('signing_keys').orderBy('created_at', 'desc')).map(fromRow);
  }

  async activate(kids: string[], trx: Knex): Promise<void> {
    if (kids.length) await trx('signing_keys').whereIn('kid', kids).update({ status: 'active', activate_at: null });
  }

  async insert(row: Omit<SigningKeyRow, 'created_at' | 'retired_at'>, trx: Knex): Promise<void> {
    await trx('signing_keys').insert({ ...row, public_jwk: JSON.stringify(row.public_jwk) });
  }

  async retire(kids: string[], trx: Knex): Promise<void> {
    if (kids.length) await trx('signing_keys').whereIn('kid', kids).update({ status: 'retired', retired_at: trx.fn.now() });
  }

  /** Serialises key creation across servers sharing one database. */
  async lock(trx: Knex): Promise<void> {
    await trx.raw('select pg_advisory_xact_lock(7265616)');
  }
}
