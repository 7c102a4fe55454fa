import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { registerSecretAgent } from '../support/agents.js';
import { createGuardProxy, listenGuard } from '../../src/guard/guard-proxy.js';
import { DEFAULT_POLICY } from '../../src/guard/scope-policy.js';
import { Verifier } from '../../src/verifier/index.js';
import { createLogger } from '../../src/log/logger.js';

const RESOURCE = 'https://tools.example/mcp';

/** A request with the request target and Host header exactly as given (fetch would normalize both). */
function raw(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', headers, setHost: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

describe('guard proxy: the request target and Host header', () => {
  let ts: TestServer;
  let upstream: Server;
  let elsewhere: Server;
  let guard: Server;
  let guardPort: number;
  let elsewherePort: number;
  let token: string;
  const reachedElsewhere: string[] = [];
  const reachedUpstream: string[] = [];

  beforeAll(async () => {
    ts = await startTestServer();
    upstream = createServer((req, res) => {
      reachedUpstream.push(req.url ?? '');
      res.end('upstream');
    });
    elsewhere = createServer((req, res) => {
      reachedElsewhere.push(`${req.url} ${String(req.headers['x-agent-sts-subject'])}`);
      res.end('elsewhere');
    });
    const upstreamPort = await listen(upstream);
    elsewherePort = await listen(elsewhere);
    guard = createGuardProxy({
      upstream: `http://127.0.0.1:${upstreamPort}`, verifier: new Verifier({ issuer: ts.issuer, audience: RESOURCE }), resource: RESOURCE, issuer: ts.issuer,
      policy: DEFAULT_POLICY, logger: createLogger('silent'),
    });
    guardPort = await listenGuard(guard, 0);
    const agent = await registerSecretAgent(ts, { id: agentId('caller'), scopes: ['tool:search'], audiences: [RESOURCE] });
    token = (await agent.token({ grant_type: 'client_credentials' })).body.access_token as string;
  });
  afterAll(async () => {
    await new Promise((r) => guard?.close(r));
    await new Promise((r) => upstream?.close(r));
    await new Promise((r) => elsewhere?.close(r));
    await ts?.close();
  });

  it('never forwards to another server than the upstream: absolute-form and protocol-relative targets are refused with 400', async () => {
    const auth = { host: `127.0.0.1:${guardPort}`, authorization: `Bearer ${token}` };
    for (const target of [`http://127.0.0.1:${elsewherePort}/steal`, `https://127.0.0.1:${elsewherePort}/steal`, `127.0.0.1:${elsewherePort}`, '*']) {
      const res = await raw(guardPort, target, auth);
      expect(res.status, target).toBe(400);
      // Node's HTTP parser refuses some targets itself, with an empty body; the guard answers the rest.
      if (res.body) expect(JSON.parse(res.body)).toMatchObject({ error: 'invalid_request' });
    }
    // A path that starts with two slashes is a path on the upstream.
    reachedUpstream.length = 0;
    const res = await raw(guardPort, `//127.0.0.1:${elsewherePort}/steal`, auth);
    expect(res).toMatchObject({ status: 200, body: 'upstream' });
    expect(reachedUpstream).toEqual([`//127.0.0.1:${elsewherePort}/steal`]);
    expect((await raw(guardPort, `http://127.0.0.1:${elsewherePort}/steal`, auth)).body).toMatch(/invalid_request/);
    expect(reachedElsewhere).toEqual([]);
  });

  it('answers a malformed Host header with 400, never 500', async () => {
    for (const host of ['a b', '[', 'a:99999', 'x/y', 'user@host', '']) {
      for (const headers of [{ host, authorization: `Bearer ${token}` }, { host }] as Record<string, string>[]) {
        const res = await raw(guardPort, '/mcp', headers);
        expect(res.status, host).toBe(400);
      }
    }
    expect((await raw(guardPort, '/mcp', { host: `127.0.0.1:${guardPort}`, authorization: `Bearer ${token}` })).status).toBe(200);
    expect((await raw(guardPort, '/mcp', { host: `[::1]:${guardPort}`, authorization: `Bearer ${token}` })).status).toBe(200);
  });

  it('names the path-inserted metadata URL (RFC 9728 §3.1) in a challenge: at the resource\'s origin when called by its host name, else at the Host called', async () => {
    const byName = await raw(guardPort, '/mcp', { host: 'tools.example' });
    expect(byName.status).toBe(401);
    expect(byName.headers['www-authenticate']).toBe('Bearer resource_metadata="https://tools.example/.well-known/oauth-protected-resource/mcp"');
    const byAddress = await raw(guardPort, '/mcp', { host: `127.0.0.1:${guardPort}` });
    expect(byAddress.headers['www-authenticate']).toBe(`Bearer resource_metadata="http://127.0.0.1:${guardPort}/.well-known/oauth-protected-resource/mcp"`);
    const metadata = await raw(guardPort, '/.well-known/oauth-protected-resource/mcp', { host: 'tools.example' });
    expect(metadata.status).toBe(200);
    expect(JSON.parse(metadata.body)).toMatchObject({ resource: RESOURCE, authorization_servers: [ts.issuer] });
  });
});
