import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/storage/database.js';

// The embedded database (the default without DATABASE_URL) runs PostgreSQL inside WebAssembly, whose
// filesystem would otherwise turn every fsync into a no-op.
describe('the embedded database is durable', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-durable-'));
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('runs with fsync on and syncs the WAL to disk at every commit', async () => {
    const db = await openDatabase({ databaseUrl: undefined, dataDir, poolMax: 1 });
    try {
      expect(db.kind).toBe('embedded');
      const settings = (await db.knex.raw("select current_setting('fsync') as fsync, current_setting('wal_sync_method') as method, current_setting('synchronous_commit') as sc")).rows[0];
      expect(settings).toEqual({ fsync: 'on', method: 'fsync', sc: 'on' });
      await db.knex.raw('create table durable_probe (n int)');
      for (let n = 0; n < 5; n++) {
        const before = db.embedded!.fsyncs();
        await db.knex('durable_probe').insert({ n });
        // The commit returned only after fsync(2) of its WAL.
        expect(db.embedded!.fsyncs()).toBeGreaterThan(before);
      }
    } finally {
      await db.close();
    }
    const again = await openDatabase({ databaseUrl: undefined, dataDir, poolMax: 1 });
    try {
      expect(Number((await again.knex('durable_probe').count('* as n').first())!.n)).toBe(5);
    } finally {
      await again.close();
    }
  });
});
