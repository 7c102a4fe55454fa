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
        : writer.write(inTxn(`t-${i}`, txn), { action: 'token:limit', client_id: 'c' }, { maxPerTxn: 7 }).then((o) => (o === 'written' ? txn : 'refused'));
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
    expect(await writers[0]!.write(inTxn('late', 'txn-a'), { action: 'token:limit', client_id: 'c' }, { maxPerTxn: 7 })).toBe('over_txn_limit');
    expect(await writers[0]!.write(inTxn('other', 'txn-c'), { action: 'token:limit', client_id: 'c' }, { maxPerTxn: 7 })).toBe('written');
  });

  it('writes a record exchanged for another only while that one is recorded with its hash, unrevoked, its agent active', async () => {
    const agent = (id: string, status: string) => ({
      id, scopes: '[]', audiences: '[]', token_endpoint_auth_method: 'client_secret_basic', grant_types: '[]', max_delegation_depth: 3, agent_checksums: '[]', status,
    });
    await db.knex('agents').insert([agent('agent-on', 'active'), agent('agent-off', 'disabled')]);
    const parent = (jti: string, clientId: string, hash: string): NewTokenRecord => ({ ...record(jti), client_id: clientId, token_hash: hash });
    const writer = new RecordWriter(db.knex);
    const issued = { action: 'token:parent', client_id: 'c' };
    await Promise.all([
      writer.write(parent('p-good', 'agent-on', 'hash-good'), issued),
      writer.write(parent('p-revoked', 'agent-on', 'hash-revoked'), issued),
      writer.write(parent('p-disabled', 'agent-off', 'hash-disabled'), issued),
    ]);
    await db.knex('issued_tokens').where({ jti: 'p-revoked' }).update({ revoked_at: new Date(), revoked_reason: 'test' });
    const child = (jti: string, parentJti: string, hash: string, limited = false) => writer.write(
      { ...record(jti), parent_jti: parentJti, ...(limited ? { type: 'txn_token', txn: `txn-${jti}` } : {}) }, issued,
      { parent: { jti: parentJti, hash }, ...(limited ? { maxPerTxn: 5 } : {}) },
    );
    // One batch without any transaction limit: checked in the insert statement itself, next to a record with no check.
    const plain = await Promise.all([
      child('s-good', 'p-good', 'hash-good'),
      child('s-wrong-hash', 'p-good', 'hash-other'),
      child('s-revoked', 'p-revoked', 'hash-revoked'),
      child('s-disabled', 'p-disabled', 'hash-disabled'),
      writer.write(record('s-unchecked'), issued),
    ]);
    expect(plain).toEqual(['written', 'parent_refused', 'parent_refused', 'parent_refused', 'written']);
    expect((await db.knex('issued_tokens').where('jti', 'like', 's-%').pluck('jti')).sort()).toEqual(['s-good', 's-unchecked']);
    expect((await db.knex('decision_events').where({ action: 'token:parent' }).where('jti', 'like', 's-%').pluck('jti')).sort()).toEqual(['s-good', 's-unchecked']);
    // One batch, with and without a transaction limit (the locked path checks parents too).
    const outcomes = await Promise.all([
      child('c-good', 'p-good', 'hash-good'),
      child('c-wrong-hash', 'p-good', 'hash-other'),
      child('c-revoked', 'p-revoked', 'hash-revoked'),
      child('c-disabled', 'p-disabled', 'hash-disabled'),
      child('c-unknown', 'p-unknown', 'hash-good'),
      child('c-good-txn', 'p-good', 'hash-good', true),
      child('c-revoked-txn', 'p-revoked', 'hash-revoked', true),
    ]);
    expect(outcomes).toEqual(['written', 'parent_refused', 'parent_refused', 'parent_refused', 'parent_refused', 'written', 'parent_refused']);
    const rows = await db.knex('issued_tokens').where('jti', 'like', 'c-%').pluck('jti');
    expect(rows.sort()).toEqual(['c-good', 'c-good-txn']);
    expect(await db.knex('decision_events').where({ action: 'token:parent' }).whereIn('jti', ['c-good', 'c-good-txn', 'c-revoked', 'c-wrong-hash']).pluck('jti')).toHaveLength(2);
  });
});
