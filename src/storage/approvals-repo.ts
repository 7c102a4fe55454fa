import type { Knex } from 'knex';
import { hasNul } from './text.js';
import { EventsRepo } from './events-repo.js';

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired';

/** A request for human approval of a workflow step (a CIBA backchannel authentication request). */
export interface ApprovalRecord {
  id: string;
  /** The agent that asked, and will run the step. */
  client_id: string;
  /** The approver the request named (its `login_hint`). */
  approver_id: string;
  workflow_id: string;
  workflow_version: number;
  workflow_step: string;
  txn: string;
  binding_message: string;
  scope: string;
  resource: string | null;
  status: ApprovalStatus;
  /** Who decided: an approver id, or `admin`. */
  decided_by: string | null;
  decided_at: string | null;
  reason: string | null;
  /** The token issued on the approval, once the agent redeemed it. */
  token_jti: string | null;
  /** Seconds since the epoch. */
  expires_at: number;
  created_at: string;
}

export type NewApproval = Omit<ApprovalRecord, 'status' | 'decided_by' | 'decided_at' | 'reason' | 'token_jti' | 'created_at'> & { auth_req_id: string };

const COLUMNS = ['id', 'client_id', 'approver_id', 'workflow_id', 'workflow_version', 'workflow_step', 'txn', 'binding_message', 'scope',
  'resource', 'status', 'decided_by', 'decided_at', 'reason', 'token_jti', 'expires_at', 'created_at'];

const fromRow = (row: Record<string, unknown>): ApprovalRecord => ({
  ...(row as unknown as ApprovalRecord),
  workflow_version: Number(row.workflow_version),
  expires_at: Number(row.expires_at),
  decided_at: row.decided_at == null ? null : new Date(row.decided_at as string).toISOString(),
  created_at: new Date(row.created_at as string).toISOString(),
});

const tags = (a: Pick<ApprovalRecord, 'workflow_id' | 'txn'>) => ({ workflow_id: a.workflow_id, workflow_txn: a.txn });

/** Approval requests and their decisions; every change is recorded as a decision event in the same transaction. */
export class ApprovalsRepo {
  constructor(private readonly db: Knex) {}

  async insert(a: NewApproval): Promise<void> {
    await this.db.transaction(async (trx) => {
      await trx('approvals').insert(a);
      await new EventsRepo(trx).record({
        decision: 'approval_requested', action: 'backchannel_authentication', client_id: a.client_id, reason: null,
        detail: `approval ${a.id} of step ${a.workflow_step} asked of ${a.approver_id}: ${a.binding_message}`, ...tags(a),
      });
    });
  }

  async find(id: string): Promise<ApprovalRecord | undefined> {
    if (hasNul(id)) return undefined;
    const row = await this.db('approvals').where({ id }).first(COLUMNS);
    return row ? fromRow(row) : undefined;
  }

  async findByAuthReqId(authReqId: string): Promise<(ApprovalRecord & { auth_req_id: string }) | undefined> {
    if (hasNul(authReqId)) return undefined;
    const row = await this.db('approvals').where({ auth_req_id: authReqId }).first([...COLUMNS, 'auth_req_id']);
    return row ? { ...fromRow(row), auth_req_id: row.auth_req_id as string } : undefined;
  }

  /** The CIBA request id of an approval (never shown to approvers). */
  async authReqId(id: string): Promise<string | undefined> {
    const row = await this.db('approvals').where({ id }).first('auth_req_id');
    return row?.auth_req_id as string | undefined;
  }

  /**
   * Decides a pending approval that has not expired, with its decision event; undefined when it is no longer
   * pending or has expired (nothing is changed then).
   */
  async decide(id: string, d: { status: 'approved' | 'denied'; decided_by: string; reason: string | null }, nowSec: number): Promise<ApprovalRecord | undefined> {
    return this.db.transaction(async (trx) => {
      const rows = await trx('approvals').where({ id, status: 'pending' }).andWhere('expires_at', '>', nowSec)
        .update({ status: d.status, decided_by: d.decided_by, decided_at: trx.fn.now(), reason: d.reason }).returning(COLUMNS);
      if (!rows[0]) return undefined;
      const a = fromRow(rows[0]);
      await new EventsRepo(trx).record({
        decision: d.status, action: 'approval', client_id: a.client_id, reason: d.status === 'denied' ? 'access_denied' : null,
        detail: `approval ${a.id} of step ${a.workflow_step} ${d.status} by ${d.decided_by}${d.reason ? `: ${d.reason}` : ''}`, ...tags(a),
      }, trx);
      return a;
    });
  }

  /**
   * Marks a pending approval past its expiry as expired, with its event; false when it isn't one. `decided`: an
   * approval just decided whose request turned out to be gone already (expired at the same moment).
   */
  async expire(id: string, nowSec: number, detail: string, decided = false): Promise<boolean> {
    return this.db.transaction(async (trx) => {
      const q = trx('approvals').where({ id });
      if (decided) q.whereNull('token_jti');
      else q.where({ status: 'pending' }).andWhere('expires_at', '<=', nowSec);
      const rows = await q.update({ status: 'expired', reason: detail, ...(decided ? { decided_by: null, decided_at: null } : {}) }).returning(COLUMNS);
      if (!rows[0]) return false;
      const a = fromRow(rows[0]);
      await new EventsRepo(trx).record({
        decision: 'expired', action: 'approval', client_id: a.client_id, reason: 'expired_token',
        detail: `approval ${a.id} of step ${a.workflow_step} expired unanswered: ${detail}`, ...tags(a),
      }, trx);
      return true;
    });
  }

  /**
   * Records every pending approval past its expiry (of one workflow run, or all) as expired, each with its event;
   * returns how many. Safe to run from several servers at once: each approval expires once.
   */
  async expireOverdue(nowSec: number, run?: { workflow_id: string; txn: string }, limit = 500): Promise<number> {
    const q = this.db('approvals').where({ status: 'pending' }).andWhere('expires_at', '<=', nowSec).limit(limit).select('id');
    if (run) {
      if (hasNul(run.workflow_id) || hasNul(run.txn)) return 0;
      q.where({ workflow_id: run.workflow_id, txn: run.txn });
    }
    let n = 0;
    for (const { id } of await q) if (await this.expire(id as string, nowSec, 'no answer before its expiry')) n += 1;
    return n;
  }

  /** Notes a poll of a pending request; false when the last one was less than `interval` seconds ago. */
  async notePoll(id: string, nowSec: number, interval: number): Promise<boolean> {
    const n = await this.db('approvals').where({ id })
      .andWhere((q) => q.whereNull('last_polled_at').orWhere('last_polled_at', '<=', nowSec - interval))
      .update({ last_polled_at: nowSec });
    if (n) return true;
    // Refused: the interval restarts from this poll.
    await this.db('approvals').where({ id }).update({ last_polled_at: nowSec });
    return false;
  }

  /** Binds the token issued on an approval to it, inside the transaction recording the token; false when it was used. */
  async redeem(id: string, jti: string, trx: Knex): Promise<boolean> {
    const n = await trx('approvals').where({ id, status: 'approved' }).whereNull('token_jti').update({ token_jti: jti });
    return n === 1;
  }

  /** The approvals asked for in a workflow's transaction, oldest first. */
  async forRun(workflowId: string, txn: string): Promise<ApprovalRecord[]> {
    if (hasNul(workflowId) || hasNul(txn)) return [];
    return (await this.db('approvals').where({ workflow_id: workflowId, txn }).orderBy('created_at').orderBy('id').select(COLUMNS)).map(fromRow);
  }

  /** Pending approvals not yet expired, oldest first: those asked of one approver, or all. */
  async pending(nowSec: number, approverId?: string, limit = 100): Promise<ApprovalRecord[]> {
    const q = this.db('approvals').where({ status: 'pending' }).andWhere('expires_at', '>', nowSec).orderBy('created_at').orderBy('id').limit(limit).select(COLUMNS);
    if (approverId !== undefined) q.where({ approver_id: approverId });
    return (await q).map(fromRow);
  }
}
