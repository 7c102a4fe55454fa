import type { Knex } from 'knex';

export const name = '007_approvals';

/**
 * Human approval of workflow steps (CIBA): approvers and their hashed credentials, the approval requests
 * with their decisions, and the sessions of the approval page.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('approvers', (t) => {
    t.text('id').primary();
    t.text('credential_sha256').notNullable().unique();
    t.text('status').notNullable().defaultTo('active');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.schema.createTable('approvals', (t) => {
    t.text('id').primary();
    t.text('auth_req_id').notNullable().unique();
    t.text('client_id').notNullable();
    t.text('approver_id').notNullable();
    t.text('workflow_id').notNullable();
    t.integer('workflow_version').notNullable();
    t.text('workflow_step').notNullable();
    t.text('txn').notNullable();
    t.text('binding_message').notNullable();
    t.text('scope').notNullable();
    t.text('resource');
    t.text('status').notNullable().defaultTo('pending');
    t.text('decided_by');
    t.timestamp('decided_at', { useTz: true });
    t.text('reason');
    t.text('token_jti');
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('last_polled_at');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['workflow_id', 'txn'], 'approvals_workflow_index');
    t.index(['approver_id', 'status'], 'approvals_approver_index');
  });
  await knex.schema.createTable('approver_sessions', (t) => {
    t.text('session_sha256').primary();
    t.text('approver_id').notNullable();
    t.text('csrf_token').notNullable();
    t.bigInteger('expires_at').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('approver_sessions');
  await knex.schema.dropTableIfExists('approvals');
  await knex.schema.dropTableIfExists('approvers');
}
