import type { Knex } from 'knex';

export const name = '004_biscuit';

export async function up(knex: Knex): Promise<void> {
  // A Biscuit's record holds the revocation id of the token's last block.
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.text('revocation_id');
    t.index(['revocation_id']);
  });
  // Revocation ids revoked directly (blocks appended offline, which have no record of their own).
  await knex.schema.createTable('biscuit_revocations', (t) => {
    t.text('revocation_id').primary();
    t.bigInteger('exp').notNullable();
    t.text('reason');
    t.timestamp('revoked_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['exp']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('biscuit_revocations');
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.dropColumn('revocation_id');
  });
}
