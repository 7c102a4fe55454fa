import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';
import { registerSecretAgent, type SecretAgent } from '../support/agents.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';

const API = 'https://api.example.com';

/** scrypt computations of client secrets since the server started, from /metrics. */
async function slowHashes(ts: TestServer): Promise<number> {
  const res = await fetch(`${ts.url}/metrics`);
  return sampleValue(parsePrometheus(await res.text()).samples, 'agent_sts_client_secret_hashes_total');
}

describe('client secrets after a cold start', () => {
  let ts: TestServer;
  let agent: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    agent = await registerSecretAgent(ts, { id: agentId('cold-start'), scopes: ['read'], audiences: [API] });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('20 concurrent requests of one agent share one slow hash, and all get their tokens', async () => {
    await ts.restart();
    expect(await slowHashes(ts)).toBe(0);
    const answers = await Promise.all(Array.from({ length: 20 }, () => agent.token({ grant_type: 'client_credentials' })));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(await slowHashes(ts)).toBe(1);
    // Verified once, the secret is checked without the slow hash from then on.
    expect((await agent.token({ grant_type: 'client_credentials' })).status).toBe(200);
    expect(await slowHashes(ts)).toBe(1);
  });

  it('a wrong secret concurrent with the right one is refused, and the right one is not', async () => {
    await ts.restart();
    const wrong = { authorization: basic(agent.id, `${agent.secret.slice(0, -2)}xx`) };
    const [bad, ...good] = await Promise.all([
      postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, wrong),
      ...Array.from({ length: 10 }, () => agent.token({ grant_type: 'client_credentials' })),
    ]);
    expect(bad!.status).toBe(401);
    expect(bad!.body.error).toBe('invalid_client');
    expect(good.map((a) => a.status)).toEqual(Array(10).fill(200));
    // One slow hash for the right secret, one for the wrong.
    expect(await slowHashes(ts)).toBe(2);
    // After the right secret is known, the wrong one is still refused.
    expect((await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, wrong)).status).toBe(401);
  });
});
