import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../src/storage/database.js';
import { RecordWriter } from '../../src/storage/record-writer.js';
import type { NewTokenRecord } from '../../src/storage/tokens-repo.js';
import { TestDatabase } from '../support/test-server.js';

const record = (jti: string): NewTokenRecord => ({
  jti, type: 'access_token', sub: 's', client_id: 'c', actor: null, parent_jti: null, txn: null, scope: null, audience: ['a'],
  kid: 'k', iat: 1, exp: 2, token_hash: 'h', cnf_jkt: null,
});

describe('group commit of token records', () => {
  const tdb = new TestDatabase();
  let db: Database;
  beforeAll(async () => {
    await tdb.create();
    db = await openDatabase({ databaseUrl: tdb.url, dataDir: tdb.dataDir, poolMax: 4 });
    await db.migrate();
  });
  afterAll(async () => {
    await db?.close();
    await tdb.drop();
  });

  it('writes concurrent records together, each with its issued event, and settles each only after the commit', async () => {
    const writer = new RecordWriter(db.knex);
    await Promise.all(Array.from({ length: 50 }, (_, i) => writer.write(record(`j${i}`), { action: 'token:test', client_id: 'c' })));
    expect(Number((await db.knex('issued_tokens').count('* as n').first())!.n)).toBe(50);
    expect(Number((await db.knex('decision_events').where({ decision: 'issued', action: 'token:test' }).count('* as n').first())!.n)).toBe(50);
  });

  it('fails only the bad record of a batch', async () => {
    const writer = new RecordWriter(db.knex);
    const results = await Promise.allSettled([
      writer.write(record('ok-1'), { action: 'token:test2', client_id: 'c' }),
      writer.write(record('dup'), { action: 'token:test2', client_id: 'c' }),
      writer.write(record('dup'), { action: 'token:test2', client_id: 'c' }),
      writer.write(record('ok-2'), { action: 'token:test2', client_id: 'c' }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(Number((await db.knex('issued_tokens').whereIn('jti', ['ok-1', 'ok-2', 'dup']).count('* as n').first())!.n)).toBe(3);
    expect(Number((await db.knex('decision_events').where({ action: 'token:test2' }).count('* as n').first())!.n)).toBe(3);
  });

  it('keeps a per-transaction limit within a batch and across concurrent batches, refusing only the records beyond it', async () => {
    const inTxn = (jti: string, txn: string): NewTokenRecord => ({ ...record(jti), type: 'txn_token', txn });
    const writers = [new RecordWriter(db.knex), new RecordWriter(db.knex)];
    // Two writers (two servers) race 20 records into each of two transactions with a limit of 7, mixed with unlimited records.
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => {
      const writer = writers[i % 2]!;
      const txn = i % 4 < 2 ? 'txn-a' : 'txn-b';
      return i % 5 === 0
        ? writer.write(record(`free-${i}`), { action: 'token:limit', client_id: 'c' }).then(() => 'free')
        : writer.writeWithinTxnLimit(inTxn(`t-${i}`, txn), { action: 'token:limit', client_id: 'c' }, 7).then((ok) => (ok ? txn : 'refused'));
    }));
    const count = (v: string) => results.filter((r) => r === v).length;
    expect(count('free')).toBe(8);
    expect(count('txn-a')).toBe(7);
    expect(count('txn-b')).toBe(7);
    expect(count('refused')).toBe(40 - 8 - 14);
    const rows = await db.knex('issued_tokens').where({ type: 'txn_token' }).whereIn('txn', ['txn-a', 'txn-b']).select('txn').count('* as n').groupBy('txn');
    expect(Object.fromEntries(rows.map((r) => [r.txn, Number(r.n)]))).toEqual({ 'txn-a': 7, 'txn-b': 7 });
    // Every inserted record has its issued event; refused ones have none.
    expect(Number((await db.knex('decision_events').where({ decision: 'issued', action: 'token:limit' }).count('* as n').first())!.n)).toBe(8 + 14);
    // A transaction already at its limit refuses later records one by one too.
    expect(await writers[0]!.writeWithinTxnLimit(inTxn('late', 'txn-a'), { action: 'token:limit', client_id: 'c' }, 7)).toBe(false);
    expect(await writers[0]!.writeWithinTxnLimit(inTxn('other', 'txn-c'), { action: 'token:limit', client_id: 'c' }, 7)).toBe(true);
  });
});
