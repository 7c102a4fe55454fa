import type { Knex } from 'knex';

export const name = '006_workflows';

/**
 * Workflows (one row per version), the workflow step an intent-bound token was issued for, and the
 * workflow and transaction a refused workflow request named.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('workflows', (t) => {
    t.text('id').notNullable();
    t.integer('version').notNullable();
    t.jsonb('steps').notNullable();
    t.jsonb('agent_checksums').notNullable().defaultTo('{}');
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['id', 'version']);
  });
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.text('workflow_id');
    t.integer('workflow_version');
    t.text('workflow_step');
    t.index(['txn', 'workflow_id', 'workflow_version'], 'issued_tokens_txn_workflow_index');
  });
  await knex.schema.alterTable('decision_events', (t) => {
    t.text('workflow_id');
    t.text('workflow_txn');
    t.index(['workflow_id', 'workflow_txn'], 'decision_events_workflow_index');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('decision_events', (t) => {
    t.dropIndex(['workflow_id', 'workflow_txn'], 'decision_events_workflow_index');
    t.dropColumn('workflow_txn');
    t.dropColumn('workflow_id');
  });
  await knex.schema.alterTable('issued_tokens', (t) => {
    t.dropIndex(['txn', 'workflow_id', 'workflow_version'], 'issued_tokens_txn_workflow_index');
    t.dropColumn('workflow_step');
    t.dropColumn('workflow_version');
    t.dropColumn('workflow_id');
  });
  await knex.schema.dropTableIfExists('workflows');
}
