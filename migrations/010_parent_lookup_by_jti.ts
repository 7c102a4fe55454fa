import type { Knex } from 'knex';
import * as m009 from './009_revocation_lock.js';

export const name = '010_parent_lookup_by_jti';

/**
 * `record_tokens_checked` again, planned so that a parent is always found through the primary key. PL/pgSQL
 * keeps a statement's generic plan after five calls, and the one chosen while `issued_tokens` was new (a fresh
 * database, before autovacuum's first ANALYZE) stayed as the table grew: it started from `agents` and read every
 * token of the parent's agent through the `client_id` index (some 12,000 rows to find 3 per batch), or, once the
 * lookup was fenced, scanned the whole table: 1,500-3,300 exchanges/s and 160-560 µs of PostgreSQL CPU each,
 * against 4,700-4,900/s and 53 µs now. The parents are read by `jti` alone in a materialized CTE, then joined to
 * their agents, and the function runs with `enable_seqscan = off`, so no plan scans a table that only grows.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create or replace function record_tokens_checked(p_records json, p_events json, p_checks json, p_parents text[], p_unchecked text[])
    returns setof text language plpgsql set enable_seqscan = off as $$
    begin
      perform pg_advisory_xact_lock_shared(21332, 1);
      return query
        with checks as (select * from json_to_recordset(p_checks) as c(jti text, parent text, hash text)),
        recorded as materialized (
          select p.jti, p.token_hash, p.client_id from issued_tokens p where p.jti = any(p_parents) and p.revoked_at is null
        ),
        parents as (select p.jti, p.token_hash from recorded p join agents a on a.id = p.client_id where a.status = 'active'),
        ok as (select c.jti from checks c join parents p on p.jti = c.parent and (c.hash is null or p.token_hash = c.hash)),
        ins as (
          insert into issued_tokens
          select * from json_populate_recordset(null::issued_tokens, p_records) r
          where r.jti = any(p_unchecked) or r.jti in (select ok.jti from ok)
          returning issued_tokens.jti
        )
        insert into decision_events (decision, action, client_id, jti)
        select 'issued', e.action, e.client_id, e.jti
        from json_to_recordset(p_events) as e(jti text, action text, client_id text) join ins on ins.jti = e.jti
        returning decision_events.jti;
    end $$`);
}

/** Back to migration 009's function. */
export async function down(knex: Knex): Promise<void> {
  await m009.down(knex);
  await m009.up(knex);
}
