import type { Knex } from 'knex';

export const name = '001_foundation';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('agents', (t) => {
    t.text('id').primary();
    t.jsonb('scopes').notNullable();
    t.jsonb('audiences').notNullable();
    t.text('token_endpoint_auth_method').notNullable();
    t.text('client_secret_hash');
    t.jsonb('jwks');
    t.jsonb('grant_types').notNullable();
    t.boolean('dpop_bound_access_tokens').notNullable().defaultTo(false);
    t.integer('max_delegation_depth').notNullable();
    t.jsonb('agent_checksums').notNullable();
    t.text('status').notNullable().defaultTo('active');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('disabled_at', { useTz: true });
  });

  await knex.schema.createTable('signing_keys', (t) => {
    t.text('kid').primary();
    t.text('alg').notNullable();
    t.jsonb('public_jwk').notNullable();
    t.text('private_jwk').notNullable();
    t.boolean('encrypted').notNullable();
    t.text('status').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.bigInteger('activate_at');
    t.timestamp('retired_at', { useTz: true });
    t.index(['status', 'alg']);
  });

  await knex.schema.createTable('issued_tokens', (t) => {
    t.text('jti').primary();
    t.text('type').notNullable();
    t.text('sub').notNullable();
    t.text('client_id').notNullable();
    t.jsonb('actor');
    t.text('parent_jti');
    t.text('txn');
    t.text('scope');
    t.jsonb('audience').notNullable();
    t.text('kid');
    t.bigInteger('iat').notNullable();
    t.bigInteger('exp').notNullable();
    t.text('token_hash').notNullable();
    t.text('cnf_jkt');
    t.timestamp('revoked_at', { useTz: true });
    t.text('revoked_reason');
    t.index(['sub']);
    t.index(['client_id']);
    t.index(['txn']);
    t.index(['parent_jti']);
    t.index(['kid', 'exp']);
  });

  await knex.schema.createTable('decision_events', (t) => {
    t.bigIncrements('id').primary();
    t.timestamp('at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('decision').notNullable();
    t.text('action').notNullable();
    t.text('client_id');
    t.text('jti');
    t.text('reason');
    t.text('detail');
    t.index(['client_id']);
    t.index(['at']);
  });

  await knex.schema.createTable('oidc_payloads', (t) => {
    t.text('model').notNullable();
    t.text('id').notNullable();
    t.jsonb('payload').notNullable();
    t.text('grant_id');
    t.text('uid');
    t.text('user_code');
    t.bigInteger('expires_at');
    t.primary(['model', 'id']);
    t.index(['grant_id']);
    t.index(['uid']);
    t.index(['user_code']);
  });

  await knex.schema.createTable('replay_cache', (t) => {
    t.text('id').primary();
    t.bigInteger('expires_at').notNullable();
    t.index(['expires_at']);
  });

  await knex.schema.createTable('settings', (t) => {
    t.text('key').primary();
    t.text('value').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['settings', 'replay_cache', 'oidc_payloads', 'decision_events', 'issued_tokens', 'signing_keys', 'agents']) {
    await knex.schema.dropTableIfExists(table);
  }
}
