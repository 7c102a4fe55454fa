import type { Knex } from 'knex';

export const name = '002_workload_identity';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.jsonb('attestors').notNullable().defaultTo('[]');
  });
  await knex.schema.createTable('join_tokens', (t) => {
    t.text('token_hash').primary();
    t.text('agent_id').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.timestamp('used_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['agent_id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('join_tokens');
  await knex.schema.alterTable('agents', (t) => {
    t.dropColumn('attestors');
  });
}
