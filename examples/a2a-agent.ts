/**
 * An A2A agent (A2A JS SDK) protected by agent-sts: its agent card names agent-sts as the authorization
 * server, `expressGuard` verifies every JSON-RPC call, and the agent answers knowing who acts for whom.
 *
 *   # 1. agent-sts: npm start   (and register this agent's callers with audience https://specialist.example/a2a)
 *   npx tsx examples/a2a-agent.ts            # listens on 127.0.0.1:4000
 *   # 2. call it with any A2A client sending `Authorization: Bearer <token from agent-sts>`
 */
import express from 'express';
import type { AgentCard, Message } from '@a2a-js/sdk';
import { AgentEvent, DefaultRequestHandler, InMemoryTaskStore, type AgentExecutor } from '@a2a-js/sdk/server';
import { agentCardHandler, jsonRpcHandler } from '@a2a-js/sdk/server/express';
import { expressGuard, Verifier, type VerifiedRequest } from '../src/verifier/index.js';

const ISSUER = process.env.ISSUER ?? 'http://localhost:8080';
const PORT = Number(process.env.PORT ?? 4000);
const RESOURCE = process.env.RESOURCE ?? 'https://specialist.example/a2a';
const url = `http://127.0.0.1:${PORT}`;

const card: AgentCard = {
  name: 'specialist', description: 'Answers order questions for other agents', version: '1.0.0', provider: undefined, iconUrl: undefined,
  supportedInterfaces: [{ url: `${url}/a2a/jsonrpc`, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: '1.0' }],
  capabilities: { streaming: false, pushNotifications: false, extensions: [] },
  securitySchemes: {
    'agent-sts': { scheme: { $case: 'oauth2SecurityScheme', value: {
      description: 'Tokens from agent-sts (client credentials or token exchange)',
      oauth2MetadataUrl: `${ISSUER}/.well-known/oauth-authorization-server`,
      flows: { flow: { $case: 'clientCredentials', value: { tokenUrl: `${ISSUER}/token`, refreshUrl: '', scopes: { 'orders:read': 'Read orders' } } } },
    } } },
  },
  securityRequirements: [{ schemes: { 'agent-sts': { list: ['orders:read'] } } }],
  defaultInputModes: ['text/plain'], defaultOutputModes: ['text/plain'], skills: [], signatures: [],
};

const executor: AgentExecutor = {
  async execute(ctx, bus) {
    const reply: Message = {
      messageId: crypto.randomUUID(), contextId: ctx.contextId, taskId: '', role: 2 as Message['role'],
      parts: [{ content: { $case: 'text', value: `answered for ${ctx.context.user?.userName}` } } as Message['parts'][number]],
      metadata: undefined, extensions: [], referenceTaskIds: [],
    };
    bus.publish(AgentEvent.message(reply));
    bus.finished();
  },
  async cancelTask() {},
};

const app = express();
app.use('/.well-known/agent-card.json', agentCardHandler({ agentCardProvider: async () => card }));
app.use('/a2a/jsonrpc', expressGuard(new Verifier({ issuer: ISSUER, audience: RESOURCE }), { requiredScopes: ['orders:read'] }), jsonRpcHandler({
  requestHandler: new DefaultRequestHandler(card, new InMemoryTaskStore(), executor),
  userBuilder: async (req) => {
    const t = (req as unknown as { agent: VerifiedRequest }).agent.accessToken!;
    return { isAuthenticated: true, userName: t.actors.length ? `${t.subject} via ${t.actors.join(' <- ')}` : t.subject };
  },
}));
app.listen(PORT, '127.0.0.1', () => console.log(`A2A agent on ${url} (card at ${url}/.well-known/agent-card.json)`));
