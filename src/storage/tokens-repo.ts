import type { Knex } from 'knex';
import { hasNul } from './text.js';
import { ignoreRecords, type RecordObserver } from './record-observer.js';
import { inTransaction, noSignals, type InitiatingEntity, type RevokedToken, type SecuritySignals } from './security-signals.js';

export interface TokenRecord {
  jti: string;
  type: string;
  sub: string;
  client_id: string;
  actor: unknown;
  parent_jti: string | null;
  txn: string | null;
  scope: string | null;
  audience: string[];
  kid: string | null;
  iat: number;
  exp: number;
  token_hash: string;
  cnf_jkt: string | null;
  /** For a Biscuit: the revocation id of its last block. */
  revocation_id?: string | null;
  /** For an intent-bound token: the workflow, its version and the step it was issued for. */
  workflow_id?: string | null;
  workflow_version?: number | null;
  workflow_step?: string | null;
  revoked_at: string | null;
  revoked_reason: string | null;
}

export type NewTokenRecord = Omit<TokenRecord, 'revoked_at' | 'revoked_reason'>;

export interface TokenFilter {
  sub?: string;
  client_id?: string;
  txn?: string;
  jti?: string;
  type?: string;
}

/** A record as its table row: the audience and the actor chain as JSON text. */
function toRow(record: NewTokenRecord): Record<string, unknown> {
  return { ...record, audience: JSON.stringify(record.audience), actor: record.actor === null ? null : JSON.stringify(record.actor) };
}

function fromRow(row: Record<string, unknown>): TokenRecord {
  const r = row as unknown as TokenRecord;
  const revoked = row.revoked_at as Date | string | null;
  return {
    ...r,
    revoked_at: revoked === null ? null : new Date(revoked).toISOString(),
    ...(row.workflow_version !== undefined ? { workflow_version: row.workflow_version === null ? null : Number(row.workflow_version) } : {}),
  };
}

/** A record to insert with its `issued` decision event. */
export interface BatchItem {
  record: NewTokenRecord;
  issued: { action: string; client_id: string | null };
}

export class TokensRepo {
  constructor(
    private readonly db: Knex,
    private readonly observer: RecordObserver = ignoreRecords,
    /** Told of every revocation inside its transaction (security events for Shared Signals receivers). */
    private readonly signals: SecuritySignals = noSignals,
  ) {}

  /**
   * Inserts a token record; with `issued`, also its `issued` decision event, in the same statement
   * (one round trip on the hot path). Inside a caller's transaction the observer is not told: the caller
   * commits.
   */
  async insert(record: NewTokenRecord, trx: Knex = this.db, issued?: { action: string; client_id: string | null }): Promise<void> {
    await this.insertRow(record, trx, issued);
    if (trx === this.db) this.observer.tokenRecorded(record.type);
  }

  private async insertRow(record: NewTokenRecord, trx: Knex, issued?: { action: string; client_id: string | null }): Promise<void> {
    const q = trx('issued_tokens').insert(toRow(record));
    if (!issued) {
      await q;
      return;
    }
    const sql = q.returning('jti').toSQL();
    await trx.raw(
      `with t as (${sql.sql}) insert into decision_events (decision, action, client_id, jti) select 'issued', ?, ?, jti from t`,
      [...sql.bindings, issued.action, issued.client_id],
    );
  }

  /**
   * Inserts several records and their `issued` events in one statement (a data-modifying CTE: both inserts
   * commit together or not at all), so a batch costs one round trip and no transaction of its own.
   */
  async insertMany(items: BatchItem[]): Promise<void> {
    await this.insertManyRows(items, this.db);
    for (const { record } of items) this.observer.tokenRecorded(record.type);
  }

  private async insertManyRows(items: BatchItem[], trx: Knex): Promise<void> {
    const records = trx('issued_tokens').insert(items.map(({ record }) => toRow(record))).toSQL();
    const events = trx('decision_events').insert(items.map(({ record, issued }) => ({ decision: 'issued', action: issued.action, client_id: issued.client_id, jti: record.jti }))).toSQL();
    await trx.raw(`with t as (${records.sql}) ${events.sql}`, [...records.bindings, ...events.bindings]);
  }

  /**
   * Inserts a batch of records of which some are limited per transaction (`maxPerTxn`): in one database
   * transaction, under locks on every transaction id involved (taken in one order, so two batches never
   * deadlock), counts what each transaction already holds and inserts each record that stays within its
   * limit, in order. Returns, per record, whether it was inserted. Concurrent requests (and servers)
   * can't overshoot a limit, at five round trips per batch rather than per record.
   */
  async insertManyWithinTxnLimits(items: (BatchItem & { maxPerTxn?: number })[]): Promise<boolean[]> {
    const limited = items.filter((i) => i.maxPerTxn !== undefined && i.record.txn);
    const accepted = await this.db.transaction(async (trx) => {
      const txns = [...new Set(limited.map((i) => i.record.txn!))];
      const held = new Map<string, number>();
      if (txns.length) {
        await trx.raw(`select pg_advisory_xact_lock(h) from (select distinct hashtext('txn:' || t) as h from unnest(?::text[]) as t order by h) as locks`, [txns]);
        const rows = await trx('issued_tokens').whereIn('txn', txns).whereIn('type', [...new Set(limited.map((i) => i.record.type))])
          .select('txn', 'type').count<{ txn: string; type: string; n: number | string }[]>('* as n').groupBy('txn', 'type');
        for (const r of rows) held.set(`${r.type} ${r.txn}`, Number(r.n));
      }
      const ok = items.map((i) => {
        if (i.maxPerTxn === undefined || !i.record.txn) return true;
        const key = `${i.record.type} ${i.record.txn}`;
        const n = held.get(key) ?? 0;
        if (n >= i.maxPerTxn) return false;
        held.set(key, n + 1);
        return true;
      });
      const inserted = items.filter((_, k) => ok[k]);
      if (inserted.length) await this.insertManyRows(inserted, trx);
      return ok;
    });
    items.forEach((i, k) => {
      if (accepted[k]) this.observer.tokenRecorded(i.record.type);
    });
    return accepted;
  }

  /** A record and the status of the agent it was issued to (undefined when there is no such agent), in one query. */
  async findWithAgentStatus(jti: string): Promise<{ record: TokenRecord; agentStatus: string | undefined } | undefined> {
    if (hasNul(jti)) return undefined;
    const row = await this.db('issued_tokens as t').leftJoin('agents as a', 'a.id', 't.client_id').where('t.jti', jti).first('t.*', 'a.status as agent_status');
    if (!row) return undefined;
    const { agent_status: agentStatus, ...record } = row as Record<string, unknown>;
    return { record: fromRow(record), agentStatus: typeof agentStatus === 'string' ? agentStatus : undefined };
  }

  async find(jti: string): Promise<TokenRecord | undefined> {
    if (hasNul(jti)) return undefined;
    const row = await this.db('issued_tokens').where({ jti }).first();
    return row ? fromRow(row) : undefined;
  }

  /** The newest record among those holding one of these revocation ids (a Biscuit's recorded ancestors). */
  async findByRevocationIds(ids: string[]): Promise<TokenRecord[]> {
    if (!ids.length) return [];
    return (await this.db('issued_tokens').whereIn('revocation_id', ids)).map(fromRow);
  }

  /**
   * Revocation ids of revoked Biscuits still alive: those of revoked records, and those revoked
   * directly. A token holding any of them is refused.
   */
  async revokedBiscuitIds(nowSec: number): Promise<string[]> {
    const rows = await this.db.raw(
      `select revocation_id from issued_tokens where revocation_id is not null and revoked_at is not null and exp > ?
       union select revocation_id from biscuit_revocations where exp > ?`, [nowSec, nowSec]);
    return rows.rows.map((r: { revocation_id: string }) => r.revocation_id);
  }

  /** Revokes a revocation id that no record holds (a block appended offline), until `exp`. */
  async revokeBiscuitId(revocationId: string, exp: number, reason: string): Promise<void> {
    await this.db('biscuit_revocations').insert({ revocation_id: revocationId, exp, reason }).onConflict('revocation_id').ignore();
  }

  /** Newest first; `after` continues a listing after the record with that (iat, jti). */
  async list(filter: TokenFilter, limit: number, after?: { iat: number; jti: string }): Promise<TokenRecord[]> {
    const q = this.db('issued_tokens').orderBy('iat', 'desc').orderBy('jti').limit(limit);
    for (const [k, v] of Object.entries(filter)) if (v !== undefined) q.where(k, v);
    if (after) q.where((w) => w.where('iat', '<', after.iat).orWhere((x) => x.where('iat', after.iat).andWhere('jti', '>', after.jti)));
    return (await q).map(fromRow);
  }

  /** The token's ancestors (root first) and all of its descendants. */
  async lineage(jti: string): Promise<{ ancestors: TokenRecord[]; descendants: TokenRecord[] }> {
    const ancestors = await this.db.raw(
      `with recursive up as (
         select t.*, 0 as depth from issued_tokens t where t.jti = (select parent_jti from issued_tokens where jti = ?)
         union all
         select p.*, up.depth + 1 from issued_tokens p join up on p.jti = up.parent_jti where up.depth < 64
       ) select * from up order by depth desc`, [jti]);
    const descendants = await this.db.raw(
      `with recursive down as (
         select t.*, 1 as depth from issued_tokens t where t.parent_jti = ?
         union all
         select c.*, down.depth + 1 from issued_tokens c join down on c.parent_jti = down.jti where down.depth < 64
       ) select * from down order by depth, iat`, [jti]);
    const strip = (rows: Record<string, unknown>[]) => rows.map(({ depth: _d, ...r }) => fromRow(r));
    return { ancestors: strip(ancestors.rows), descendants: strip(descendants.rows) };
  }

  /**
   * Revokes a token and every token exchanged from it; returns the jtis newly revoked. The security
   * signals are told in the same transaction (`by` initiated it; descendants are revoked by policy).
   */
  async revokeWithDescendants(jti: string, reason: string, trx: Knex = this.db, by: InitiatingEntity = 'admin'): Promise<string[]> {
    return this.revokeTree(trx, 'select jti, 0 as depth from issued_tokens where jti = ?', [jti], reason, by);
  }

  /** Revokes every live token issued to or for an agent, and their descendants. */
  async revokeAllFor(agentId: string, reason: string, nowSec: number, trx: Knex = this.db, by: InitiatingEntity = 'admin'): Promise<string[]> {
    return this.revokeTree(trx, 'select jti, 0 as depth from issued_tokens where (client_id = ? or sub = ?) and exp > ?', [agentId, agentId, nowSec], reason, by);
  }

  private async revokeTree(trx: Knex, roots: string, bindings: unknown[], reason: string, by: InitiatingEntity): Promise<string[]> {
    return inTransaction(this.db, trx, async (t) => {
      const result = await t.raw(
        `with recursive tree as (
           ${roots}
           union all
           select c.jti, tree.depth + 1 from issued_tokens c join tree on c.parent_jti = tree.jti where tree.depth < 64
         ), firsts as (select jti, min(depth) as depth from tree group by jti)
         update issued_tokens i set revoked_at = now(), revoked_reason = ?
         from firsts where i.jti = firsts.jti and i.revoked_at is null
         returning i.jti, i.type, i.client_id, i.sub, firsts.depth`, [...bindings as Knex.ValueDict[], reason]);
      const rows = result.rows.map((r: RevokedToken) => ({ ...r, depth: Number(r.depth) })) as RevokedToken[];
      rows.sort((a, b) => a.depth - b.depth);
      if (rows.length) await this.signals.tokensRevoked(t, rows, { initiating_entity: by, reason });
      return rows.map((r) => r.jti);
    });
  }

  /**
   * Inserts the record unless `guard`, run in the same database transaction under a lock on the record's
   * transaction id (`txn`), returns a reason to refuse it; then returns that reason. Check and insert are
   * atomic: concurrent requests in one transaction see each other's records.
   */
  async insertGuarded(record: NewTokenRecord, guard: (trx: Knex) => Promise<string | undefined>, issued?: { action: string; client_id: string | null }): Promise<string | undefined> {
    if (!record.txn) throw new Error('a guarded insert needs a record with a txn');
    const refusal = await this.db.transaction(async (trx) => {
      await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`txn:${record.txn}`]);
      const reason = await guard(trx);
      if (reason !== undefined) return reason;
      await this.insertRow(record, trx, issued);
      return undefined;
    });
    if (refusal === undefined) this.observer.tokenRecorded(record.type);
    return refusal;
  }

  /** The steps of a workflow version that have tokens in a transaction. */
  async workflowStepsInTxn(txn: string, workflowId: string, version: number, trx: Knex = this.db): Promise<Set<string>> {
    const rows = await trx('issued_tokens').where({ txn, workflow_id: workflowId, workflow_version: version }).distinct('workflow_step');
    return new Set(rows.map((r: { workflow_step: string }) => r.workflow_step));
  }
}
