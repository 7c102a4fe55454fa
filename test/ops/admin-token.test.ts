import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startTestServer } from '../support/test-server.js';

describe('generated admin token', () => {
  it('is generated on first start, written to a 0600 file whose path (not the token) is logged, and survives a restart', async () => {
    const ts = await startTestServer({ AGENT_STS_ADMIN_TOKEN: '' });
    try {
      const file = join(ts.db.dataDir, 'admin-token');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      const token = readFileSync(file, 'utf8').trim();
      expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      const logs = ts.logs.join('');
      expect(logs).toContain(file);
      expect(logs).not.toContain(token);

      const get = (t: string) => fetch(`${ts.url}/admin/agents`, { headers: { authorization: `Bearer ${t}` } });
      expect((await get(token)).status).toBe(200);
      expect((await get(`${token}x`)).status).toBe(401);

      await ts.restart({ AGENT_STS_ADMIN_TOKEN: '' });
      expect(readFileSync(file, 'utf8').trim()).toBe(token);
      expect((await get(token)).status).toBe(200);
      const stored = await ts.server.db.knex('settings').select('value');
      expect(JSON.stringify(stored)).not.toContain(token);
    } finally {
      await ts.close();
    }
  });
});
