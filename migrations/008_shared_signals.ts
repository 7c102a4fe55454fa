import type { Knex } from 'knex';

export const name = '008_shared_signals';

/**
 * Shared Signals: event streams (one row each, owned by the client that created it) and the events
 * outbox (one row per event and stream, written in the transaction of the change that caused it).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('ssf_streams', (t) => {
    t.text('stream_id').primary();
    t.text('client_id').notNullable().index('ssf_streams_client_index');
    t.text('aud').notNullable();
    t.text('delivery_method').notNullable();
    t.text('endpoint_url');
    t.text('authorization_header');
    t.jsonb('events_requested').notNullable();
    t.text('description');
    t.text('status').notNullable().defaultTo('enabled');
    t.text('status_reason');
    t.jsonb('excluded_subjects').notNullable().defaultTo('[]');
    t.text('lease_owner');
    t.bigInteger('lease_until');
    t.bigInteger('retry_at').notNullable().defaultTo(0);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.schema.createTable('ssf_outbox', (t) => {
    t.bigIncrements('id').primary();
    t.text('stream_id').notNullable().references('stream_id').inTable('ssf_streams').onDelete('CASCADE');
    t.text('jti').notNullable();
    t.text('event_type').notNullable();
    // json, not jsonb: the members keep the order they were written in (`format` first in a subject identifier).
    t.json('sub_id').notNullable();
    t.json('event').notNullable();
    t.bigInteger('iat').notNullable();
    t.text('state').notNullable().defaultTo('pending');
    t.integer('attempts').notNullable().defaultTo(0);
    t.bigInteger('first_failure_at');
    t.text('last_error');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('delivered_at', { useTz: true });
    t.unique(['stream_id', 'jti'], { indexName: 'ssf_outbox_stream_jti_unique' });
    t.index(['stream_id', 'state', 'id'], 'ssf_outbox_stream_state_index');
  });
  await knex.raw("create index ssf_outbox_pending_index on ssf_outbox (stream_id, id) where state = 'pending'");
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('ssf_outbox');
  await knex.schema.dropTableIfExists('ssf_streams');
}
