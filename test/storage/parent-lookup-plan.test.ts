import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/storage/database.js';
import { TokensRepo } from '../../src/storage/tokens-repo.js';
import { agentTokenRecord, databaseWithAgent } from '../support/storage.js';
import { POSTGRES_URL, TestDatabase } from '../support/test-server.js';

const AGENT = 'spiffe://agent-sts.local/agents/plan';
const record = (jti: string, parent: string | null = null) => agentTokenRecord(AGENT, jti, parent);
const child = (jti: string, parent: string) => ({ record: record(jti, parent), issued: { action: 'token:test', client_id: AGENT }, parent: { jti: parent, hash: `hash-of-${parent}` } });

// The records of exchanged tokens are written by record_tokens_checked, whose plan PL/pgSQL caches. A plan made
// while the table was small must not read the table, or all of an agent's tokens, once it has grown.
describe.skipIf(!POSTGRES_URL)('the parent check of exchanged tokens\' records', () => {
  const tdb = new TestDatabase();
  let db: Database;
  let tokens: TokensRepo;
  beforeAll(async () => {
    // One connection: the plan cached by the first calls is the one used after the table grew.
    db = await databaseWithAgent(tdb, AGENT, 1);
    await db.knex.raw('alter table issued_tokens set (autovacuum_enabled = false)');
    tokens = new TokensRepo(db.knex);
  });
  afterAll(async () => {
    await db?.close();
    await tdb.drop();
  });

  /** Rows of issued_tokens this session has read so far, by scans and index fetches. */
  const rowsRead = async () => {
    await db.knex.raw('select pg_stat_force_next_flush()');
    await db.knex.raw('select pg_stat_clear_snapshot()');
    const { rows } = await db.knex.raw(`select seq_tup_read + coalesce(idx_tup_fetch, 0) as n from pg_stat_user_tables where relname = 'issued_tokens'`);
    return Number(rows[0].n);
  };

  it('reads a few rows per batch after the table has grown 20,000 tokens past the plan', async () => {
    for (let i = 0; i < 5; i++) await tokens.insert(record(`p${i}`));
    // Past the five calls after which PL/pgSQL may keep a generic plan.
    for (let i = 0; i < 8; i++) expect(await tokens.insertBatch([child(`early${i}`, `p${i % 5}`)])).toEqual(['written']);
    await db.knex.raw(`insert into issued_tokens (jti, type, sub, client_id, audience, iat, exp, token_hash)
      select 'bulk' || g, 'access_token', ?, ?, '["a"]', 1, 4000000000, 'h' || g from generate_series(1, 20000) g`, [AGENT, AGENT]);

    const before = await rowsRead();
    expect(await tokens.insertBatch([child('late0', 'p0'), child('late1', 'p1'), child('late2', 'p2')])).toEqual(['written', 'written', 'written']);
    const read = (await rowsRead()) - before;
    expect(read).toBeGreaterThan(0);
    expect(read).toBeLessThan(100);
  });
});
