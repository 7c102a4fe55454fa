import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/storage/database.js';
import { RecordWriter } from '../../src/storage/record-writer.js';
import { TokensRepo } from '../../src/storage/tokens-repo.js';
import { agentTokenRecord, databaseWithAgent } from '../support/storage.js';
import { POSTGRES_URL, TestDatabase } from '../support/test-server.js';

const AGENT = 'spiffe://agent-sts.local/agents/race';
const record = (jti: string, parent: string | null = null) => agentTokenRecord(AGENT, jti, parent);
const issued = { action: 'token:test', client_id: AGENT };

// A token exchanged from another while that one is being revoked: whichever comes first, the new token is
// either refused or revoked with the tree; never left alive under a revoked parent. The interleavings need
// concurrent transactions, which the embedded database (one connection) never runs.
describe.skipIf(!POSTGRES_URL)('revocation racing the record of a token exchanged from the revoked one', () => {
  const tdb = new TestDatabase();
  let db: Database;
  let tokens: TokensRepo;
  beforeAll(async () => {
    db = await databaseWithAgent(tdb, AGENT, 6);
    tokens = new TokensRepo(db.knex);
  });
  afterAll(async () => {
    await db?.close();
    await tdb.drop();
  });

  /** Resolves once `n` sessions of the test database wait for a lock. */
  async function lockWaiters(n: number): Promise<void> {
    for (let i = 0; i < 500; i++) {
      const { rows } = await db.knex.raw(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
      if (rows[0].n >= n) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`never saw ${n} sessions waiting for a lock`);
  }
  const revokedAt = async (jti: string) => ((await db.knex('issued_tokens').where({ jti }).first()) as { revoked_at: unknown } | undefined)?.revoked_at;

  it('refuses the child when the revocation updated the parent first, once the revocation commits', async () => {
    await tokens.insert(record('p1'));
    const revocation = await db.knex.transaction();
    await tokens.revokeWithDescendants('p1', 'test', revocation);
    const write = new RecordWriter(db.knex).write(record('c1', 'p1'), issued, { parent: { jti: 'p1', hash: 'hash-of-p1' } });
    // Until the revocation commits, the child's write waits for the revocation lock.
    await lockWaiters(1);
    await revocation.commit();
    expect(await write).toBe('parent_refused');
    expect(await db.knex('issued_tokens').where({ jti: 'c1' }).first()).toBeUndefined();
  });

  /** The write of `child` under `parent`, held back after its parent check: another session holds the child's jti. */
  async function writeHeldBack(child: string, parent: string) {
    const holder = await db.knex.transaction();
    await tokens.insert(record(child, parent), holder);
    const write = new RecordWriter(db.knex).write(record(child, parent), issued, { parent: { jti: parent, hash: `hash-of-${parent}` } });
    await lockWaiters(1);
    return { write, release: () => holder.rollback() };
  }

  it('revokes the child whose parent check came first, though it commits after the revocation began', async () => {
    await tokens.insert(record('p2'));
    const { write, release } = await writeHeldBack('c2', 'p2');
    // The revocation waits for the child's write to commit, and then finds the child.
    const revoked = tokens.revokeWithDescendants('p2', 'test');
    await lockWaiters(2);
    await release();
    expect(await write).toBe('written');
    expect(await revoked).toEqual(['p2', 'c2']);
    expect(await revokedAt('c2')).not.toBeNull();
  });

  it('revokes a grandchild recorded while its parent was revoked with the tree', async () => {
    await tokens.insert(record('p3'));
    await tokens.insert(record('c3', 'p3'));
    const { write, release } = await writeHeldBack('g3', 'c3');
    const revoked = tokens.revokeWithDescendants('p3', 'test');
    await lockWaiters(2);
    await release();
    expect(await write).toBe('written');
    expect(await revoked).toEqual(['p3', 'c3', 'g3']);
    expect(await revokedAt('g3')).not.toBeNull();
  });

  it('checks the parent of a guarded insert (a workflow step) in its transaction, against a revocation in flight', async () => {
    await tokens.insert(record('p4'));
    const revocation = await db.knex.transaction();
    await tokens.revokeWithDescendants('p4', 'test', revocation);
    const guarded = tokens.insertGuarded({ ...record('c4', 'p4'), txn: 'txn-4' }, async (trx) => (await tokens.parentHolds({ jti: 'p4', hash: 'hash-of-p4' }, trx) ? undefined : 'parent revoked'), issued);
    await lockWaiters(1);
    await revocation.commit();
    expect(await guarded).toBe('parent revoked');
    expect(await db.knex('issued_tokens').where({ jti: 'c4' }).first()).toBeUndefined();
  });

  it('records a WIT renewal only while the renewed WIT is good, against a revocation in flight', async () => {
    await tokens.insert(record('w5'));
    const revocation = await db.knex.transaction();
    await tokens.revokeWithDescendants('w5', 'test', revocation);
    const renewal = tokens.insertUnder(record('w5-renewed', 'w5'), { jti: 'w5' });
    await lockWaiters(1);
    await revocation.commit();
    expect(await renewal).toBe(false);
    expect(await tokens.insertUnder(record('w6-renewed', 'w5'), { jti: 'w5' })).toBe(false);
    await tokens.insert(record('w7'));
    expect(await tokens.insertUnder(record('w7-renewed', 'w7'), { jti: 'w7' })).toBe(true);
  });
});
