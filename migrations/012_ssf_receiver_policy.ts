import type { Knex } from 'knex';

export const name = '012_ssf_receiver_policy';

/**
 * What an agent's Shared Signals streams may carry beyond the events about itself and its own tokens
 * (`ssf` of the agent's registration, set by an admin): the resources it serves, the agents it follows,
 * or every subject.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.jsonb('ssf').notNullable().defaultTo('{}');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('agents', (t) => {
    t.dropColumn('ssf');
  });
}
