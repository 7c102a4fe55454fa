import type { Knex } from 'knex';
import { hasNul, storableText } from './text.js';
import { ignoreRecords, type RecordObserver } from './record-observer.js';

export interface DecisionEvent {
  decision: 'issued' | 'refused' | 'revoked' | 'admin' | 'approval_requested' | 'approved' | 'denied' | 'expired';
  action: string;
  client_id?: string | null;
  jti?: string | null;
  reason?: string | null;
  detail?: string | null;
  /** For a refused workflow token request: the workflow and the transaction it named. */
  workflow_id?: string | null;
  workflow_txn?: string | null;
}

export interface StoredDecisionEvent extends Required<DecisionEvent> {
  id: number;
  at: string;
}

export class EventsRepo {
  constructor(private readonly db: Knex, private readonly observer: RecordObserver = ignoreRecords) {}

  /** Records a decision; the observer hears of it even when the write fails (the decision was made). */
  async record(event: DecisionEvent, trx: Knex = this.db): Promise<void> {
    // Client ids, reasons and details may come from the request.
    const text = (v: string | null | undefined) => (typeof v === 'string' ? storableText(v) : null);
    try {
      await trx('decision_events').insert({
        decision: event.decision,
        action: storableText(event.action),
        client_id: text(event.client_id),
        jti: text(event.jti),
        reason: text(event.reason),
        detail: text(event.detail?.slice(0, 500)),
        ...(event.workflow_id ? { workflow_id: text(event.workflow_id), workflow_txn: text(event.workflow_txn) } : {}),
      });
    } finally {
      this.observer.decisionRecorded(event);
    }
  }

  /** Inserts events summarising decisions the observer already heard of, a thousand per statement. */
  async recordCounted(events: DecisionEvent[]): Promise<void> {
    if (!events.length) return;
    const text = (v: string | null | undefined) => (typeof v === 'string' ? storableText(v) : null);
    const rows = events.map((e) => ({
      decision: e.decision, action: storableText(e.action), client_id: text(e.client_id), jti: null, reason: text(e.reason), detail: text(e.detail?.slice(0, 500)),
    }));
    // Within PostgreSQL's 65535 bind parameters per statement.
    for (let i = 0; i < rows.length; i += 1000) await this.db('decision_events').insert(rows.slice(i, i + 1000));
  }

  async list(filter: { client_id?: string; decision?: string; after?: number }, limit: number): Promise<StoredDecisionEvent[]> {
    const q = this.db('decision_events').orderBy('id', 'desc').limit(limit);
    if (filter.client_id) q.where({ client_id: filter.client_id });
    if (filter.decision) q.where({ decision: filter.decision });
    if (filter.after !== undefined) q.where('id', '<', filter.after);
    const rows = await q;
    return rows.map((r) => ({ ...r, id: Number(r.id), at: new Date(r.at).toISOString() }));
  }

  /** Approval decisions (requested, approved, denied, expired) for a workflow's steps in a transaction, oldest first. */
  async workflowApprovalEvents(workflowId: string, txn: string, limit = 1000): Promise<StoredDecisionEvent[]> {
    if (hasNul(workflowId) || hasNul(txn)) return [];
    const rows = await this.db('decision_events').whereIn('decision', ['approval_requested', 'approved', 'denied', 'expired'])
      .where({ workflow_id: workflowId, workflow_txn: txn }).orderBy('id').limit(limit);
    return rows.map((r) => ({ ...r, id: Number(r.id), at: new Date(r.at).toISOString() }));
  }

  /** Refusals of token requests for a workflow in a transaction, oldest first. */
  async workflowRefusals(workflowId: string, txn: string, limit = 1000): Promise<StoredDecisionEvent[]> {
    if (hasNul(workflowId) || hasNul(txn)) return [];
    const rows = await this.db('decision_events').where({ decision: 'refused', workflow_id: workflowId, workflow_txn: txn }).orderBy('id').limit(limit);
    return rows.map((r) => ({ ...r, id: Number(r.id), at: new Date(r.at).toISOString() }));
  }
}
