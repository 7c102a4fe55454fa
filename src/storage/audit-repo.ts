import type { Knex } from 'knex';
import type { TokenRecord } from './tokens-repo.js';

/** What an audit read is limited to; times are epoch milliseconds, `since` inclusive, `until` exclusive. */
export interface AuditFilter {
  sinceMs?: number;
  untilMs?: number;
  /** An agent: the token's client_id or sub; the event's client_id or its token's sub. */
  agent?: string;
  txn?: string;
}

/** A token record as the audit export shows it: the record itself (hashes only, never the token). */
export type AuditToken = TokenRecord;

export interface AuditDecision {
  id: number;
  /** Epoch milliseconds. */
  atMs: number;
  /** The stored timestamp exactly (microseconds), for the cursor. */
  cursor: string;
  decision: string;
  action: string;
  client_id: string | null;
  jti: string | null;
  reason: string | null;
  detail: string | null;
  /** sub and txn of the token the decision is about, when there is one. */
  sub: string | null;
  txn: string | null;
}

const isoOf = (ms: number) => new Date(ms).toISOString();

/**
 * Issued-token records and decision events in time order, one page at a time with a keyset cursor, so an
 * export of any size holds one page in memory and no connection between pages.
 */
export class AuditRepo {
  constructor(private readonly db: Knex) {}

  /** Token records ordered by (iat, jti), after the cursor. */
  async tokens(filter: AuditFilter, after: { iat: number; jti: string } | undefined, limit: number): Promise<AuditToken[]> {
    const q = this.db('issued_tokens')
      .select('jti', 'type', 'sub', 'client_id', 'actor', 'parent_jti', 'txn', 'scope', 'audience', 'kid', 'iat', 'exp', 'token_hash', 'cnf_jkt', 'revocation_id', 'revoked_at', 'revoked_reason')
      .orderBy([{ column: 'iat' }, { column: 'jti' }]).limit(limit);
    // iat is in whole seconds: a token is in [since, until) when iat * 1000 is.
    if (filter.sinceMs !== undefined) q.where('iat', '>=', Math.ceil(filter.sinceMs / 1000));
    if (filter.untilMs !== undefined) q.where('iat', '<', Math.ceil(filter.untilMs / 1000));
    if (filter.agent !== undefined) q.where((w) => w.where('client_id', filter.agent!).orWhere('sub', filter.agent!));
    if (filter.txn !== undefined) q.where('txn', filter.txn);
    if (after) q.whereRaw('(iat, jti) > (?, ?)', [after.iat, after.jti]);
    const rows: Record<string, unknown>[] = await q;
    return rows.map((r) => ({
      ...(r as unknown as AuditToken),
      iat: Number(r.iat),
      exp: Number(r.exp),
      revoked_at: r.revoked_at === null ? null : new Date(r.revoked_at as string | Date).toISOString(),
    }));
  }

  /** Decision events ordered by (at, id), after the cursor, with the sub and txn of their token. */
  async decisions(filter: AuditFilter, after: { cursor: string; id: number } | undefined, limit: number): Promise<AuditDecision[]> {
    const q = this.db({ e: 'decision_events' })
      .leftJoin({ t: 'issued_tokens' }, 't.jti', 'e.jti')
      .select('e.id', 'e.at', this.db.raw('e.at::text as at_cursor'), 'e.decision', 'e.action', 'e.client_id', 'e.jti', 'e.reason', 'e.detail', 't.sub', 't.txn')
      .orderBy([{ column: 'e.at' }, { column: 'e.id' }]).limit(limit);
    if (filter.sinceMs !== undefined) q.where('e.at', '>=', isoOf(filter.sinceMs));
    if (filter.untilMs !== undefined) q.where('e.at', '<', isoOf(filter.untilMs));
    if (filter.agent !== undefined) q.where((w) => w.where('e.client_id', filter.agent!).orWhere('t.sub', filter.agent!));
    if (filter.txn !== undefined) q.where('t.txn', filter.txn);
    if (after) q.whereRaw('(e.at, e.id) > (?::timestamptz, ?)', [after.cursor, after.id]);
    const rows: Record<string, unknown>[] = await q;
    return rows.map((r) => ({
      id: Number(r.id),
      atMs: new Date(r.at as string | Date).getTime(),
      cursor: r.at_cursor as string,
      decision: r.decision as string,
      action: r.action as string,
      client_id: r.client_id as string | null,
      jti: r.jti as string | null,
      reason: r.reason as string | null,
      detail: r.detail as string | null,
      sub: (r.sub as string | null) ?? null,
      txn: (r.txn as string | null) ?? null,
    }));
  }
}
