import type { Knex } from 'knex';
import { hasNul } from './text.js';
import { runPrepared } from './prepared-statements.js';
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

/**
 * The token a new one is issued from (presented in exchange, the WIT it authenticated with, a Biscuit's
 * recorded ancestor): the new record is written only while this one's is good. Without `hash`, any token
 * recorded under the `jti` (a Biscuit appended offline is not the token recorded).
 */
export interface ParentCheck {
  jti: string;
  hash?: string;
}

/** A record to insert with its `issued` decision event, and the conditions it is inserted under. */
export interface BatchItem {
  record: NewTokenRecord;
  issued: { action: string; client_id: string | null };
  /** Insert only while the record's transaction holds fewer tokens of its type than this. */
  maxPerTxn?: number;
  /** Insert only while this token (the one exchanged) is recorded with this hash, unrevoked, its agent active. */
  parent?: ParentCheck;
}

export type BatchOutcome = 'written' | 'over_txn_limit' | 'parent_refused';

/** The distinct jtis the batch's parent checks name (a jti holding NUL can't be recorded, so it never passes). */
const parentsOf = (items: BatchItem[]): string[] => [...new Set(items.flatMap((i) => (i.parent && !hasNul(i.parent.jti) ? [i.parent.jti] : [])))];

/**
 * Of the jtis bound (a text array), the tokens recorded unrevoked and issued to an active agent, with their
 * hashes. Looked up by the array: joined to a batch's JSON rows instead, the planner chose a sequential scan.
 * (The batch statement's copy is in `record_tokens_checked`, migration 010.)
 */
// The tokens are read by jti alone first (migration 010 says why): joined at once, the planner may start from the agent.
const GOOD_PARENTS = `with recorded as materialized (select jti, token_hash, client_id from issued_tokens where jti = any(?::text[]) and revoked_at is null)
  select p.jti, p.token_hash from recorded p join agents a on a.id = p.client_id where a.status = 'active'`;

/**
 * The revocation lock (migration 009): a record whose parent is checked is written holding it shared, in a
 * statement that starts after it is held; a revocation holds it exclusively. A check so sees every revocation
 * finished before it, and a revocation every record written before it: no token is recorded alive under a
 * revoked parent. (Row locks on the parents did the same at a quarter of the exchange throughput.)
 */
const REVOCATION_LOCK_SHARED = 'select pg_advisory_xact_lock_shared(21332, 1)';
const REVOCATION_LOCK = 'select pg_advisory_xact_lock(21332, 1)';

/** Whether a parent check passes against the good parents found. */
const parentPasses = (check: ParentCheck, good: Map<string, string>) => good.has(check.jti) && (check.hash === undefined || good.get(check.jti) === check.hash);

/** The `issued` events of a batch's records, as JSON rows. */
const eventsOf = (items: BatchItem[]) => JSON.stringify(items.map(({ record, issued }) => ({ jti: record.jti, action: issued.action, client_id: issued.client_id })));

/**
 * The tail of a statement inserting a batch's records and their `issued` events from JSON rows: two bindings
 * whatever the batch's size, and no per-row SQL to build. Returns the jtis inserted.
 */
function batchRows(items: BatchItem[]): { sql: string; bindings: Knex.RawBinding[] } {
  const columns = [...new Set(items.flatMap(({ record }) => Object.keys(record)))].map((c) => `"${c}"`);
  return {
    sql: `ins as (
         insert into issued_tokens (${columns.join(', ')})
         select ${columns.map((c) => `r.${c}`).join(', ')} from json_populate_recordset(null::issued_tokens, ?::json) r
         returning jti
       )
       insert into decision_events (decision, action, client_id, jti)
       select 'issued', e.action, e.client_id, e.jti from json_to_recordset(?::json) as e(jti text, action text, client_id text) join ins using (jti)
       returning jti`,
    bindings: [JSON.stringify(items.map(({ record }) => record)), eventsOf(items)],
  };
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
  private async insertManyRows(items: BatchItem[], trx: Knex): Promise<void> {
    const rows = batchRows(items);
    if (trx === this.db) await runPrepared(this.db, `with ${rows.sql}`, rows.bindings);
    else await trx.raw(`with ${rows.sql}`, rows.bindings);
  }

  /**
   * Inserts a batch of records with their `issued` events, each only if its conditions hold, and says per
   * record what happened:
   * - `parent`: the token it was exchanged for must be recorded with that hash, unrevoked, and its agent
   *   active, judged in the very statement that inserts the batch (one round trip: a separate read would
   *   lengthen every group commit, and the group commit's latency is what bounds throughput);
   * - `maxPerTxn`: its transaction must hold fewer tokens of its type. Such a batch runs in one database
   *   transaction under locks on every transaction id involved (taken in one order, so two batches never
   *   deadlock): counts, then inserts in order, so concurrent requests (and servers) can't overshoot.
   */
  async insertBatch(items: BatchItem[]): Promise<BatchOutcome[]> {
    let outcomes: BatchOutcome[];
    if (items.some((i) => i.maxPerTxn !== undefined && i.record.txn)) {
      outcomes = await this.db.transaction((trx) => this.insertWithinTxnLimits(items, trx));
    } else if (items.some((i) => i.parent)) {
      const inserted = await this.insertRowsWithParentChecks(items);
      outcomes = items.map((i) => (inserted.has(i.record.jti) ? 'written' : 'parent_refused'));
    } else {
      await this.insertManyRows(items, this.db);
      outcomes = items.map(() => 'written');
    }
    items.forEach((i, k) => {
      if (outcomes[k] === 'written') this.observer.tokenRecorded(i.record.type);
    });
    return outcomes;
  }

  /** In `trx`: locks every limited record's `txn` (in one order), counts, and inserts in order what stays within its limit and parent check. */
  private async insertWithinTxnLimits(items: BatchItem[], trx: Knex): Promise<BatchOutcome[]> {
    const limited = items.filter((i) => i.maxPerTxn !== undefined && i.record.txn);
    const txns = [...new Set(limited.map((i) => i.record.txn!))];
    await trx.raw(`select pg_advisory_xact_lock(h) from (select distinct hashtext('txn:' || t) as h from unnest(?::text[]) as t order by h) as locks`, [txns]);
    const counts = await trx('issued_tokens').whereIn('txn', txns).whereIn('type', [...new Set(limited.map((i) => i.record.type))])
      .select('txn', 'type').count<{ txn: string; type: string; n: number | string }[]>('* as n').groupBy('txn', 'type');
    const held = new Map(counts.map((r) => [`${r.type} ${r.txn}`, Number(r.n)]));
    const parentJtis = parentsOf(items);
    if (parentJtis.length) await trx.raw(REVOCATION_LOCK_SHARED);
    const good = await this.goodParents(parentJtis, trx);
    const outcomes = items.map((i): BatchOutcome => {
      if (i.parent && !parentPasses(i.parent, good)) return 'parent_refused';
      if (i.maxPerTxn === undefined || !i.record.txn) return 'written';
      const key = `${i.record.type} ${i.record.txn}`;
      const n = held.get(key) ?? 0;
      if (n >= i.maxPerTxn) return 'over_txn_limit';
      held.set(key, n + 1);
      return 'written';
    });
    const written = items.filter((_, k) => outcomes[k] === 'written');
    if (written.length) await this.insertManyRows(written, trx);
    return outcomes;
  }

  /**
   * One call: inserts the records (and their `issued` events) whose parent check passes, or that have none,
   * under the revocation lock (see REVOCATION_LOCK_SHARED); returns the jtis inserted.
   */
  private async insertRowsWithParentChecks(items: BatchItem[]): Promise<Set<string>> {
    const checks = items.flatMap((i) => (i.parent && !hasNul(i.parent.jti) ? [{ jti: i.record.jti, parent: i.parent.jti, hash: i.parent.hash }] : []));
    const unchecked = items.filter((i) => !i.parent).map((i) => i.record.jti);
    const inserted = await runPrepared(this.db, 'select record_tokens_checked as jti from record_tokens_checked(?::json, ?::json, ?::json, ?::text[], ?::text[])',
      [JSON.stringify(items.map((i) => i.record)), eventsOf(items), JSON.stringify(checks), parentsOf(items), unchecked]);
    return new Set((inserted as { jti: string }[]).map((r) => r.jti));
  }

  /** Inserts the record if its parent's check passes, under the revocation lock; says whether it did. */
  async insertUnder(record: NewTokenRecord, parent: ParentCheck): Promise<boolean> {
    return (await this.insertUnless(record, async (trx) => ((await this.parentHolds(parent, trx)) ? undefined : 'parent refused'))) === undefined;
  }

  /** Whether the parent check passes now, in `trx`, which then holds off revocations until it commits. */
  async parentHolds(check: ParentCheck, trx: Knex): Promise<boolean> {
    if (hasNul(check.jti)) return false;
    await trx.raw(REVOCATION_LOCK_SHARED);
    return parentPasses(check, await this.goodParents([check.jti], trx));
  }

  /** Of these jtis, the tokens recorded unrevoked for an active agent (jti → hash). */
  private async goodParents(jtis: string[], trx: Knex): Promise<Map<string, string>> {
    if (!jtis.length) return new Map();
    const { rows } = (await trx.raw(GOOD_PARENTS, [jtis])) as { rows: { jti: string; token_hash: string }[] };
    return new Map(rows.map((r) => [r.jti, r.token_hash]));
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

  /** Revokes the tree under `roots`, under the revocation lock: every record written from a parent before it is in the tree. */
  private async revokeTree(trx: Knex, roots: string, bindings: unknown[], reason: string, by: InitiatingEntity): Promise<string[]> {
    return inTransaction(this.db, trx, async (t) => {
      await t.raw(REVOCATION_LOCK);
      const result = await t.raw(
        `with recursive tree as (
           ${roots}
           union all
           select c.jti, tree.depth + 1 from issued_tokens c join tree on c.parent_jti = tree.jti where tree.depth < 64
         ), firsts as (select jti, min(depth) as depth from tree group by jti)
         update issued_tokens i set revoked_at = now(), revoked_reason = ?
         from firsts where i.jti = firsts.jti and i.revoked_at is null
         returning i.jti, i.type, i.client_id, i.sub, i.audience, firsts.depth`, [...bindings as Knex.ValueDict[], reason]);
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
  async insertGuarded<R>(record: NewTokenRecord, guard: (trx: Knex) => Promise<R | undefined>, issued?: { action: string; client_id: string | null }): Promise<R | undefined> {
    if (!record.txn) throw new Error('a guarded insert needs a record with a txn');
    return this.insertUnless(record, async (trx) => {
      await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`txn:${record.txn}`]);
      return guard(trx);
    }, issued);
  }

  /** In one database transaction: the reason `refuse` gives, or else the record inserted (and the observer told). */
  private async insertUnless<R>(record: NewTokenRecord, refuse: (trx: Knex) => Promise<R | undefined>, issued?: { action: string; client_id: string | null }): Promise<R | undefined> {
    const refusal = await this.db.transaction(async (trx) => {
      const reason = await refuse(trx);
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
