import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { discoverOAuthProtectedResourceMetadata, extractResourceMetadataUrl } from '@modelcontextprotocol/sdk/client/auth.js';
import * as oauth from 'oauth4webapi';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { createGuardProxy, listenGuard } from '../../src/guard/guard-proxy.js';
import { DEFAULT_POLICY } from '../../src/guard/scope-policy.js';
import { Verifier } from '../../src/verifier/index.js';
import { createLogger } from '../../src/log/logger.js';
import type { JWK } from 'jose';
import { BISCUIT_TOKEN_TYPE, delegate } from '../../src/tokens/biscuit.js';
import { privateJwk, publicOf } from '../support/biscuit.js';

const RESOURCE = 'https://tools.example/mcp';

describe('guard proxy in front of an MCP server (real MCP SDK on both sides)', () => {
  let ts: TestServer;
  let mcp: Server;
  let guard: Server;
  let guardUrl: string;
  const seen: IncomingHttpHeaders[] = [];
  let caller: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    mcp = createServer((req, res) => {
      seen.push(req.headers);
      const server = new McpServer({ name: 'tools', version: '1.0.0' });
      server.registerTool('search', { description: 'search the docs', inputSchema: { q: z.string() } }, async ({ q }) => ({
        content: [{ type: 'text', text: `results for ${q}; subject=${req.headers['x-agent-sts-subject']}; actors=${req.headers['x-agent-sts-actors'] ?? ''}` }],
      }));
      server.registerTool('delete_all', { description: 'dangerous' }, async () => ({ content: [{ type: 'text', text: 'deleted' }] }));
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      res.on('close', () => {
        void transport.close();
        void server.close();
      });
      server.connect(transport).then(() => transport.handleRequest(req, res)).catch(() => res.destroy());
    });
    await new Promise<void>((r) => mcp.listen(0, '127.0.0.1', r));
    const upstream = `http://127.0.0.1:${(mcp.address() as AddressInfo).port}`;
    guard = createGuardProxy({
      upstream, verifier: new Verifier({ issuer: ts.issuer, audience: RESOURCE }), resource: RESOURCE, issuer: ts.issuer,
      policy: DEFAULT_POLICY, logger: createLogger('silent'),
    });
    guardUrl = `http://127.0.0.1:${await listenGuard(guard, 0)}`;
    caller = await registerSecretAgent(ts, { id: agentId('mcp-client'), scopes: ['tool:search'], audiences: [RESOURCE] });
  });
  afterAll(async () => {
    await new Promise((r) => guard?.close(r));
    await new Promise((r) => mcp?.close(r));
    await ts?.close();
  });

  async function connect(token: string) {
    const client = new Client({ name: 'agent', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${guardUrl}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
    return client;
  }

  it('lists tools and calls one in scope; refuses a tool outside the scope', async () => {
    const token = (await caller.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const client = await connect(token);
    try {
      const tools = await client.listTools();
      expect(tools.tools.map((t) => t.name).sort()).toEqual(['delete_all', 'search']);
      const result = await client.callTool({ name: 'search', arguments: { q: 'agents' } });
      expect((result.content as { text: string }[])[0]!.text).toBe(`results for agents; subject=${caller.id}; actors=`);
      await expect(client.callTool({ name: 'delete_all', arguments: {} })).rejects.toThrow(/403|insufficient_scope/);
    } finally {
      await client.close();
    }
  });

  it('refuses without a token (401 with WWW-Authenticate pointing at the RFC 9728 metadata), and serves that metadata', async () => {
    const res = await fetch(`${guardUrl}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/);
    for (const path of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']) {
      const meta = await (await fetch(`${guardUrl}${path}`)).json();
      expect(meta).toMatchObject({ resource: RESOURCE, authorization_servers: [ts.issuer] });
    }
  });

  it('is discovered at the path-inserted metadata URL of RFC 9728 §3.1 by the MCP SDK client and by oauth4webapi', async () => {
    const fetched: [string, number][] = [];
    const recording: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      fetched.push([String(input instanceof Request ? input.url : input), res.status]);
      return res;
    };
    // The MCP SDK tries the path-inserted URL first and falls back to the root one: it finds the first.
    const meta = await discoverOAuthProtectedResourceMetadata(new URL(`${guardUrl}/mcp`), {}, recording);
    expect(meta).toMatchObject({ resource: RESOURCE, authorization_servers: [ts.issuer] });
    expect(fetched).toEqual([[`${guardUrl}/.well-known/oauth-protected-resource/mcp`, 200]]);
    // ... and the URL a refusal names.
    const refused = await fetch(`${guardUrl}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) });
    const named = extractResourceMetadataUrl(refused);
    expect(named?.href).toBe(`${guardUrl}/.well-known/oauth-protected-resource/mcp`);
    expect(await discoverOAuthProtectedResourceMetadata(new URL(`${guardUrl}/mcp`), { resourceMetadataUrl: named })).toMatchObject({ resource: RESOURCE });

    // oauth4webapi derives the metadata URL from the resource identifier and checks the `resource` it names; the
    // resource's host is this guard.
    const toGuard: typeof fetch = (input, init) => fetch(String(input instanceof Request ? input.url : input).replace(new URL(RESOURCE).origin, guardUrl), init);
    const res = await oauth.resourceDiscoveryRequest(new URL(RESOURCE), { [oauth.customFetch]: toGuard });
    expect(res.url).toBe(`${guardUrl}/.well-known/oauth-protected-resource/mcp`);
    expect(await oauth.processResourceDiscoveryResponse(new URL(RESOURCE), res)).toMatchObject({ resource: RESOURCE, authorization_servers: [ts.issuer] });
  });

  it('strips identity headers a client tries to smuggle in, and the credentials themselves', async () => {
    const token = (await caller.token({ grant_type: 'client_credentials' })).body.access_token as string;
    seen.length = 0;
    const res = await fetch(`${guardUrl}/mcp`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream',
        'x-agent-sts-subject': 'spiffe://agent-sts.test/agents/admin', 'X-Agent-STS-Actors': 'someone-else',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(res.status).toBe(200);
    expect(seen).toHaveLength(1);
    expect(seen[0]!['x-agent-sts-subject']).toBe(caller.id);
    expect(seen[0]!['x-agent-sts-actors']).toBeUndefined();
    expect(seen[0]!.authorization).toBeUndefined();
  });

  it('carries a delegated token through: the tool sees the whole actor chain', async () => {
    const app = await registerSecretAgent(ts, { id: agentId('app'), scopes: ['tool:search'], audiences: ['https://orchestrator.example'] });
    const orchestrator = await registerSecretAgent(ts, { id: agentId('orchestrator'), grant_types: [TOKEN_EXCHANGE], scopes: ['tool:search'], audiences: ['https://specialist.example'], token_exchange: { may_act_for_others: true } });
    const specialist = await registerSecretAgent(ts, { id: agentId('specialist'), grant_types: [TOKEN_EXCHANGE], scopes: ['tool:search'], audiences: [RESOURCE], token_exchange: { may_act_for_others: true } });
    const t0 = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const t1 = (await exchange(orchestrator, { subject_token: t0, subject_token_type: AT })).body.access_token as string;
    const t2 = (await exchange(specialist, { subject_token: t1, subject_token_type: AT, resource: RESOURCE })).body.access_token as string;
    const client = await connect(t2);
    try {
      const result = await client.callTool({ name: 'search', arguments: { q: 'orders' } });
      expect((result.content as { text: string }[])[0]!.text).toBe(`results for orders; subject=${app.id}; actors=${specialist.id} ${orchestrator.id}`);
    } finally {
      await client.close();
    }
  });

  it('carries a Biscuit chain through: minted by the orchestrator, narrowed offline for the specialist; the tool sees the chain', async () => {
    const orchKey = await privateJwk();
    const app = await registerSecretAgent(ts, { id: agentId('biscuit-app'), scopes: ['tool:search', 'tool:delete_all'], audiences: ['https://orchestrator.example'] });
    const orchestrator = await registerSecretAgent(ts, {
      id: agentId('biscuit-orchestrator'), grant_types: [TOKEN_EXCHANGE], scopes: ['tool:search', 'tool:delete_all'], audiences: [RESOURCE],
      jwks: { keys: [{ ...publicOf(orchKey), alg: 'EdDSA' }] }, token_exchange: { may_act_for_others: true },
    });
    const t0 = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const minted = await exchange(orchestrator, { subject_token: t0, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, audience: RESOURCE });
    expect(minted.status, JSON.stringify(minted.body)).toBe(200);
    const jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: JWK[] };
    const specialist = agentId('biscuit-specialist');
    const handed = await delegate(minted.body.access_token as string, { delegate: specialist, tools: ['tool:search'], context: 'look up the order' }, orchKey, jwks);
    const client = await connect(handed);
    try {
      const result = await client.callTool({ name: 'search', arguments: { q: 'orders' } });
      expect((result.content as { text: string }[])[0]!.text).toBe(`results for orders; subject=${app.id}; actors=${specialist} ${orchestrator.id}`);
      // The orchestrator held delete_all; the specialist was not handed it.
      await expect(client.callTool({ name: 'delete_all', arguments: {} })).rejects.toThrow(/403|insufficient_scope/);
    } finally {
      await client.close();
    }
  });
});
