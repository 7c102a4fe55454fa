/**
 * An MCP tool server that knows nothing about tokens: run it, put `agent-sts guard` in front of it, and
 * call it through the guard (see examples/mcp-agent.ts). It shows the identity the guard forwards.
 *
 *   npx tsx examples/mcp-tool-server.ts            # listens on 127.0.0.1:3000
 */
import { createServer } from 'node:http';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

const port = Number(process.env.PORT ?? 3000);

createServer((req, res) => {
  const server = new McpServer({ name: 'docs-tools', version: '1.0.0' });
  server.registerTool('search', { description: 'Search the docs', inputSchema: { q: z.string() } }, async ({ q }) => ({
    content: [{
      type: 'text',
      text: `results for "${q}", for ${req.headers['x-agent-sts-subject']} (client ${req.headers['x-agent-sts-client']}, actors: ${req.headers['x-agent-sts-actors'] ?? 'none'})`,
    }],
  }));
  server.registerTool('delete_index', { description: 'Delete the search index' }, async () => ({ content: [{ type: 'text', text: 'deleted' }] }));
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on('close', () => {
    void transport.close();
    void server.close();
  });
  server.connect(transport).then(() => transport.handleRequest(req, res)).catch(() => res.destroy());
}).listen(port, '127.0.0.1', () => console.log(`MCP tool server on http://127.0.0.1:${port}/mcp`));
