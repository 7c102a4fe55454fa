import type { Knex } from 'knex';
import * as m001 from './001_foundation.js';
import * as m002 from './002_workload_identity.js';
import * as m003 from './003_token_exchange.js';
import * as m004 from './004_biscuit.js';
import * as m005 from './005_audit_order.js';
import * as m006 from './006_workflows.js';
import * as m007 from './007_approvals.js';
import * as m008 from './008_shared_signals.js';
import * as m009 from './009_revocation_lock.js';
import * as m010 from './010_parent_lookup_by_jti.js';
import * as m011 from './011_redundant_indexes.js';
import * as m012 from './012_ssf_receiver_policy.js';

interface Migration {
  name: string;
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

/** Every migration, in order. A new migration is a new file here, never an edit of an applied one. */
const migrations: Migration[] = [m001, m002, m003, m004, m005, m006, m007, m008, m009, m010, m011, m012];

export const migrationSource: Knex.MigrationSource<Migration> = {
  getMigrations: async () => migrations,
  getMigrationName: (m) => m.name,
  getMigration: async (m) => m,
};
