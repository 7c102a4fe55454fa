import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../../src/storage/database.js';
import { AuditRepo } from '../../src/storage/audit-repo.js';
import { auditLines, type AuditKind } from '../../src/http/admin/audit-export.js';
import type { NewTokenRecord } from '../../src/storage/tokens-repo.js';
import { TestDatabase } from '../support/test-server.js';

const record = (jti: string, iat: number, txn: string | null = null): NewTokenRecord => ({
  jti, type: 'access_token', sub: `sub-${jti.length % 2}`, client_id: 'c', actor: null, parent_jti: null, txn, scope: null, audience: ['a'],
  kid: 'k', iat, exp: iat + 300, token_hash: `h-${jti}`, cnf_jkt: null,
});

async function collect(repo: AuditRepo, kinds: AuditKind[], pageSize: number, filter = {}): Promise<Record<string, unknown>[]> {
  let text = '';
  for await (const chunk of auditLines(repo, filter, new Set(kinds), pageSize)) text += chunk;
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

describe('audit export paging', () => {
  const tdb = new TestDatabase();
  let db: Database;
  const base = 1_700_000_000;
  beforeAll(async () => {
    await tdb.create();
    db = await openDatabase({ databaseUrl: tdb.url, dataDir: tdb.dataDir, poolMax: 4 });
    await db.migrate();
    // Tokens sharing an iat, out of jti order; events sharing a timestamp (one transaction).
    const rows = ['m', 'b', 'zz', 'a', 'q', 'c', 'x'].map((jti, i) => record(jti, base + Math.floor(i / 3), i % 2 ? 'txn-1' : null));
    await db.knex('issued_tokens').insert(rows.map((r) => ({ ...r, audience: JSON.stringify(r.audience) })));
    await db.knex.transaction(async (trx) => {
      for (let i = 0; i < 9; i++) {
        await trx('decision_events').insert({ decision: i % 3 ? 'refused' : 'issued', action: 'token:test', client_id: 'c', reason: 'r', jti: i % 3 ? null : rows[i]!.jti, at: new Date((base + 1) * 1000).toISOString() });
      }
    });
    await db.knex('decision_events').insert({ decision: 'admin', action: 'late', at: new Date((base + 5) * 1000).toISOString() });
  });
  afterAll(async () => {
    await db?.close();
    await tdb.drop();
  });

  it('gives every row exactly once, in the same order, whatever the page size', async () => {
    const repo = new AuditRepo(db.knex);
    const whole = await collect(repo, ['token', 'decision'], 1000);
    expect(whole.filter((l) => l.kind === 'token')).toHaveLength(7);
    expect(whole.filter((l) => l.kind === 'decision')).toHaveLength(10);
    for (const size of [1, 2, 3, 7]) expect(await collect(repo, ['token', 'decision'], size), `page size ${size}`).toEqual(whole);
    // Ties on iat are broken by jti, ties on the event time by id.
    const tokens = whole.filter((l) => l.kind === 'token');
    expect(tokens.map((t) => t.jti)).toEqual(['b', 'm', 'zz', 'a', 'c', 'q', 'x']);
    const ids = whole.filter((l) => l.kind === 'decision').map((d) => d.id as number);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(whole.at(-1)).toMatchObject({ kind: 'decision', action: 'late' });
  });

  it('pages through a filtered export too', async () => {
    const repo = new AuditRepo(db.knex);
    const filter = { txn: 'txn-1', sinceMs: (base + 1) * 1000 };
    const whole = await collect(repo, ['token', 'decision'], 1000, filter);
    expect(whole.map((l) => l.jti)).toEqual(['a', 'c', 'a']);
    expect(await collect(repo, ['token', 'decision'], 1, filter)).toEqual(whole);
  });
});

describe('audit export failures', () => {
  it('ends the stream with an error, not a clean end, when a page cannot be read', async () => {
    const { auditStream } = await import('../../src/http/admin/audit-export.js');
    const row = (i: number) => ({ ...record(`j${i}`, 1_700_000_000 + i), iat: 1_700_000_000 + i, revoked_at: null, revoked_reason: null });
    let calls = 0;
    const failing = {
      tokens: async () => {
        calls++;
        if (calls > 1) throw new Error('connection lost');
        return [row(1), row(2)];
      },
      decisions: async () => [],
    } as unknown as AuditRepo;
    const logged: string[] = [];
    const logger = { error: (_o: unknown, msg: string) => logged.push(msg) } as never;
    const stream = auditStream(failing, {}, new Set<AuditKind>(['token', 'decision']), logger, 2);
    let text = '';
    await expect((async () => {
      for await (const chunk of stream) text += chunk.toString();
    })()).rejects.toThrow('connection lost');
    expect(text).toBe('');
    expect(logged).toEqual(['audit export failed mid-stream']);
  });
});
