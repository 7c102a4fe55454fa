/**
 * An agent that gets a token from agent-sts (client credentials) and calls the MCP tool server through
 * the guard with the official MCP SDK client.
 *
 *   # 1. agent-sts:      npm start
 *   # 2. the tool:       npx tsx examples/mcp-tool-server.ts
 *   # 3. the guard:      node dist/src/cli/main.js guard --upstream http://127.0.0.1:3000 --port 8443 \
 *   #                      --issuer http://localhost:8080 --resource https://tools.example.com/mcp
 *   # 4. register the agent (scope tool:search, audience https://tools.example.com/mcp) and run:
 *   AGENT_ID=spiffe://agent-sts.local/agents/searcher AGENT_SECRET=... npx tsx examples/mcp-agent.ts
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const AS = process.env.AS ?? 'http://localhost:8080';
const GUARD = process.env.GUARD ?? 'http://127.0.0.1:8443';
const id = process.env.AGENT_ID!;
const secret = process.env.AGENT_SECRET!;

const res = await fetch(`${AS}/token`, {
  method: 'POST',
  headers: {
    'content-type': 'application/x-www-form-urlencoded',
    authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`,
  },
  body: new URLSearchParams({ grant_type: 'client_credentials', resource: 'https://tools.example.com/mcp' }),
});
const { access_token: token } = (await res.json()) as { access_token: string };

const client = new Client({ name: 'searcher', version: '1.0.0' });
await client.connect(new StreamableHTTPClientTransport(new URL(`${GUARD}/mcp`), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
console.log('tools:', (await client.listTools()).tools.map((t) => t.name));
console.log(await client.callTool({ name: 'search', arguments: { q: 'token exchange' } }));
try {
  await client.callTool({ name: 'delete_index', arguments: {} });
} catch (err) {
  console.log('delete_index refused by the guard:', (err as Error).message);
}
await client.close();
