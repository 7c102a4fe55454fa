import type { Knex } from 'knex';
import { hasNul } from './text.js';
import { EventsRepo } from './events-repo.js';

export interface WorkflowStep {
  id: string;
  /** The workload identifier of the agent that runs the step. */
  agent: string;
  tool: string;
  scopes: string[];
  depends_on: string[];
  approval: boolean;
  repeatable: boolean;
}

export interface NewWorkflow {
  id: string;
  version: number;
  steps: WorkflowStep[];
  /** Per agent, the agent checksums it may run this workflow's steps with. */
  agent_checksums: Record<string, string[]>;
}

export interface WorkflowRecord extends NewWorkflow {
  created_at: string;
}

/** A token issued for a workflow step in a transaction. */
export interface StepRun {
  workflow_step: string;
  workflow_version: number;
  jti: string;
  client_id: string;
  iat: number;
  revoked_at: string | null;
}

const fromRow = (row: Record<string, unknown>): WorkflowRecord => ({
  id: row.id as string,
  version: Number(row.version),
  steps: row.steps as WorkflowStep[],
  agent_checksums: row.agent_checksums as Record<string, string[]>,
  created_at: new Date(row.created_at as string).toISOString(),
});

/** Workflow definitions, one row per version; versions are never changed or deleted. */
export class WorkflowsRepo {
  constructor(private readonly db: Knex) {}

  /** Inserts a version; undefined when that id and version already exist. */
  async insert(wf: NewWorkflow, trx: Knex = this.db): Promise<WorkflowRecord | undefined> {
    const rows = await trx('workflows')
      .insert({ id: wf.id, version: wf.version, steps: JSON.stringify(wf.steps), agent_checksums: JSON.stringify(wf.agent_checksums) })
      .onConflict(['id', 'version']).ignore()
      .returning('*');
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  /** Inserts a version with its `admin` decision event, in one transaction; undefined when the id and version are taken. */
  async register(wf: NewWorkflow): Promise<WorkflowRecord | undefined> {
    return this.db.transaction(async (trx) => {
      const created = await this.insert(wf, trx);
      if (created) await new EventsRepo(trx).record({ decision: 'admin', action: 'workflow.register', detail: `${wf.id} version ${wf.version}` });
      return created;
    });
  }

  /** A version of a workflow, the latest when `version` is left out. */
  async find(id: string, version?: number): Promise<WorkflowRecord | undefined> {
    if (hasNul(id)) return undefined;
    const q = this.db('workflows').where({ id });
    if (version !== undefined) q.where({ version });
    const row = await q.orderBy('version', 'desc').first();
    return row ? fromRow(row) : undefined;
  }

  /** The latest version of each workflow, by id; `after` continues after that id. */
  async listLatest(limit: number, after?: string): Promise<WorkflowRecord[]> {
    const q = this.db('workflows').distinctOn('id').orderBy('id').orderBy('version', 'desc').limit(limit);
    if (after !== undefined) q.where('id', '>', after);
    return (await q).map(fromRow);
  }

  /** Every version of a workflow, newest first. */
  async versions(id: string): Promise<number[]> {
    if (hasNul(id)) return [];
    const rows = await this.db('workflows').where({ id }).orderBy('version', 'desc').select('version');
    return rows.map((r: { version: number }) => Number(r.version));
  }

  /** The tokens issued for this workflow's steps in a transaction, oldest first. */
  async runs(id: string, txn: string): Promise<StepRun[]> {
    if (hasNul(id) || hasNul(txn)) return [];
    const rows = await this.db('issued_tokens').where({ txn, workflow_id: id })
      .select('workflow_step', 'workflow_version', 'jti', 'client_id', 'iat', 'revoked_at').orderBy('iat').orderBy('jti');
    return rows.map((r: Record<string, unknown>) => ({
      workflow_step: r.workflow_step as string,
      workflow_version: Number(r.workflow_version),
      jti: r.jti as string,
      client_id: r.client_id as string,
      iat: Number(r.iat),
      revoked_at: r.revoked_at === null ? null : new Date(r.revoked_at as string).toISOString(),
    }));
  }
}
