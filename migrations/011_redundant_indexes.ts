import type { Knex } from 'knex';

export const name = '011_redundant_indexes';

/**
 * Two indexes another one already covers, and every issued token paid to maintain: `issued_tokens (txn)` is the
 * leading column of `issued_tokens (txn, workflow_id, workflow_version)` (migration 006), and
 * `decision_events (at)` of `decision_events (at, id)` (migration 005).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.dropIndex(['txn'], 'issued_tokens_txn_index');
  });
  await knex.schema.alterTable('decision_events', (t) => {
    t.dropIndex(['at'], 'decision_events_at_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('decision_events', (t) => {
    t.index(['at'], 'decision_events_at_index');
  });
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.index(['txn'], 'issued_tokens_txn_index');
  });
}
