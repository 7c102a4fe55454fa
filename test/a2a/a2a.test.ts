import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import type { AgentCard, Message } from '@a2a-js/sdk';
import { AgentEvent, DefaultRequestHandler, InMemoryTaskStore, type AgentExecutor } from '@a2a-js/sdk/server';
import { agentCardHandler, jsonRpcHandler } from '@a2a-js/sdk/server/express';
import { ClientFactory, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { expressGuard, Verifier, type VerifiedRequest } from '../../src/verifier/index.js';

const SPECIALIST = 'https://specialist.example/a2a';

describe('an A2A agent (A2A JS SDK) protected by the verifier middleware', () => {
  let ts: TestServer;
  let a2a: Server;
  let a2aUrl: string;
  let orchestrator: SecretAgent;
  let app: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    a2a = createServer();
    await new Promise<void>((r) => a2a.listen(0, '127.0.0.1', r));
    a2aUrl = `http://127.0.0.1:${(a2a.address() as AddressInfo).port}`;
    const card: AgentCard = {
      name: 'specialist', description: 'answers order questions', version: '1.0.0', provider: undefined, iconUrl: undefined,
      supportedInterfaces: [{ url: `${a2aUrl}/a2a/jsonrpc`, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: '1.0' }],
      capabilities: { streaming: false, pushNotifications: false, extensions: [] },
      // The card names agent-sts as the authorization server (OAuth 2.0 client credentials / token exchange).
      securitySchemes: {
        'agent-sts': { scheme: { $case: 'oauth2SecurityScheme', value: {
          description: 'agent-sts', oauth2MetadataUrl: `${ts.issuer}/.well-known/oauth-authorization-server`,
          flows: { flow: { $case: 'clientCredentials', value: { tokenUrl: `${ts.issuer}/token`, refreshUrl: '', scopes: { 'orders:read': 'read orders' } } } },
        } } },
      },
      securityRequirements: [{ schemes: { 'agent-sts': { list: ['orders:read'] } } }],
      defaultInputModes: ['text/plain'], defaultOutputModes: ['text/plain'], skills: [], signatures: [],
    };
    const executor: AgentExecutor = {
      async execute(ctx, bus) {
        const caller = ctx.context.user?.userName ?? 'anonymous';
        const reply: Message = {
          messageId: crypto.randomUUID(), contextId: ctx.contextId, taskId: '', role: 2 as Message['role'],
          parts: [{ content: { $case: 'text', value: `answered for ${caller}` } } as Message['parts'][number]], metadata: undefined, extensions: [], referenceTaskIds: [],
        };
        bus.publish(AgentEvent.message(reply));
        bus.finished();
      },
      async cancelTask() {},
    };
    const handler = new DefaultRequestHandler(card, new InMemoryTaskStore(), executor);
    const verifier = new Verifier({ issuer: ts.issuer, audience: SPECIALIST });
    const ex = express();
    ex.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: async () => card }));
    ex.use('/a2a/jsonrpc', expressGuard(verifier, { requiredScopes: ['orders:read'] }), jsonRpcHandler({
      requestHandler: handler,
      // The A2A user is the verified subject and its actor chain.
      userBuilder: async (req) => {
        const t = (req as unknown as { agent: VerifiedRequest }).agent.accessToken!;
        return { isAuthenticated: true, userName: `${t.subject} via ${t.actors.join(' <- ')}` };
      },
    }));
    a2a.on('request', ex as unknown as RequestListener);

    app = await registerSecretAgent(ts, { id: agentId('app'), scopes: ['orders:read'], audiences: ['https://orchestrator.example'] });
    orchestrator = await registerSecretAgent(ts, { id: agentId('orchestrator'), grant_types: [TOKEN_EXCHANGE], scopes: ['orders:read'], audiences: [SPECIALIST], token_exchange: { may_act_for_others: true } });
  });
  afterAll(async () => {
    await new Promise((r) => a2a?.close(r));
    await ts?.close();
  });

  const clientWith = async (token?: string) => new ClientFactory({
    transports: [new JsonRpcTransportFactory({
      fetchImpl: (async (url: string | URL | Request, init?: RequestInit) => {
        const headers = new Headers(init?.headers);
        if (token) headers.set('authorization', `Bearer ${token}`);
        return fetch(url, { ...init, headers });
      }) as typeof fetch,
    })],
  }).createFromUrl(a2aUrl);

  const ask = (client: Awaited<ReturnType<typeof clientWith>>) => client.sendMessage({
    tenant: '', configuration: undefined, metadata: undefined,
    message: { messageId: crypto.randomUUID(), contextId: '', taskId: '', role: 1 as Message['role'], parts: [{ content: { $case: 'text', value: 'open orders?' } } as Message['parts'][number]], metadata: undefined, extensions: [], referenceTaskIds: [] },
  });

  it('serves an agent card pointing at agent-sts, and answers a delegated caller, seeing the actor chain', async () => {
    const card = await (await fetch(`${a2aUrl}/.well-known/agent-card.json`, { headers: { 'a2a-version': '1.0' } })).json() as { securitySchemes: Record<string, unknown> };
    expect(JSON.stringify(card.securitySchemes)).toContain(`${ts.issuer}/token`);

    const t0 = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const delegated = (await exchange(orchestrator, { subject_token: t0, subject_token_type: AT, resource: SPECIALIST })).body.access_token as string;
    const result = await ask(await clientWith(delegated));
    expect(JSON.stringify(result)).toContain(`answered for ${app.id} via ${orchestrator.id}`);
  });

  it('refuses a caller without a token or with a token for another audience', async () => {
    await expect(ask(await clientWith())).rejects.toThrow(/401 Unauthorized.*an access token is required/);
    const t0 = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    await expect(ask(await clientWith(t0))).rejects.toThrow(/401 Unauthorized.*another audience/);
  });
});
