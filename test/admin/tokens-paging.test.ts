import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';

describe('GET /admin/tokens paging', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('walks every record exactly once with next/after, newest first', async () => {
    const id = agentId('paged');
    const secret = (await ts.admin('POST', '/admin/agents', { id, audiences: ['https://api.example.com'] })).body.client_secret as string;
    const issued = new Set<string>();
    for (let i = 0; i < 7; i++) {
      const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, secret) });
      issued.add(JSON.parse(Buffer.from(res.body.access_token.split('.')[1], 'base64url').toString()).jti);
    }
    const seen: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < 10; page++) {
      const res = await ts.admin('GET', `/admin/tokens?client_id=${encodeURIComponent(id)}&limit=3${after ? `&after=${after}` : ''}`);
      expect(res.status).toBe(200);
      seen.push(...res.body.tokens.map((t: { jti: string }) => t.jti));
      after = res.body.next;
      if (!after) break;
    }
    expect(seen).toHaveLength(7);
    expect(new Set(seen)).toEqual(issued);
    expect((await ts.admin('GET', '/admin/tokens?after=nonsense')).status).toBe(400);
  });
});
