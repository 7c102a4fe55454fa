import type { Knex } from 'knex';

export const name = '005_audit_order';

/** Indexes for reading records in time order with a keyset cursor (the audit export). */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.index(['iat', 'jti'], 'issued_tokens_iat_jti_index');
  });
  await knex.schema.alterTable('decision_events', (t) => {
    t.index(['at', 'id'], 'decision_events_at_id_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('decision_events', (t) => {
    t.dropIndex(['at', 'id'], 'decision_events_at_id_index');
  });
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.dropIndex(['iat', 'jti'], 'issued_tokens_iat_jti_index');
  });
}
