import type { Knex } from 'knex';

export const name = '009_revocation_lock';

/**
 * Writing the records of tokens issued from others (exchange, WIT, Biscuit) against a concurrent revocation.
 * Every such write holds the advisory lock (21332, 1) shared, a revocation holds it exclusively, and the
 * parent check runs in a statement that starts after the lock is held, so it sees every revocation that
 * finished before it; a revocation that starts later waits for the write and then sees the new record.
 * `record_tokens_checked` is that write as one call (one round trip): a PL/pgSQL function takes a new
 * snapshot for each statement, so its insert sees what committed while it waited for the lock.
 * Records missing a column get NULL for it, not the column's default (the records name every column).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function record_tokens_checked(p_records json, p_events json, p_checks json, p_parents text[], p_unchecked text[])
    returns setof text language plpgsql as $$
    begin
      perform pg_advisory_xact_lock_shared(21332, 1);
      return query
        with checks as (select * from json_to_recordset(p_checks) as c(jti text, parent text, hash text)),
        parents as (
          select p.jti, p.token_hash from issued_tokens p join agents a on a.id = p.client_id
          where p.jti = any(p_parents) and p.revoked_at is null and a.status = 'active'
        ),
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

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function record_tokens_checked(json, json, json, text[], text[])');
}
