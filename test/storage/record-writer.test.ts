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
});
