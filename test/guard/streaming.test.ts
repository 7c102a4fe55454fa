import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { registerSecretAgent } from '../support/agents.js';
import { createGuardProxy, listenGuard } from '../../src/guard/guard-proxy.js';
import { DEFAULT_POLICY } from '../../src/guard/scope-policy.js';
import { Verifier } from '../../src/verifier/index.js';
import { createLogger } from '../../src/log/logger.js';

const RESOURCE = 'https://stream.example/api';

describe('guard proxy with a streamed upstream response', () => {
  let ts: TestServer;
  let upstream: Server;
  let guard: Server;
  let guardUrl: string;

  beforeAll(async () => {
    ts = await startTestServer();
    upstream = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      let n = 0;
      const timer = setInterval(() => {
        res.write(`data: event ${++n} at ${Date.now()}\n\n`);
        if (n === 3) {
          clearInterval(timer);
          res.end();
        }
      }, 300);
      req.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    guard = createGuardProxy({
      upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      verifier: new Verifier({ issuer: ts.issuer, audience: RESOURCE }), resource: RESOURCE, issuer: ts.issuer, policy: DEFAULT_POLICY, logger: createLogger('silent'),
    });
    guardUrl = `http://127.0.0.1:${await listenGuard(guard, 0)}`;
  });
  afterAll(async () => {
    await new Promise((r) => guard?.close(r));
    await new Promise((r) => upstream?.close(r));
    await ts?.close();
  });

  it('passes events through as they come, not when the stream ends', async () => {
    const agent = await registerSecretAgent(ts, { id: agentId('streamer'), audiences: [RESOURCE] });
    const token = (await agent.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const res = await fetch(`${guardUrl}/events`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    const arrivals: number[] = [];
    let text = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      arrivals.push(Date.now());
      text += new TextDecoder().decode(value);
    }
    expect(text.match(/data: event \d/g)).toEqual(['data: event 1', 'data: event 2', 'data: event 3']);
    // The first event arrived well before the last one was written (≈600 ms later).
    expect(arrivals.length).toBeGreaterThanOrEqual(3);
    expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(400);
  });
});
