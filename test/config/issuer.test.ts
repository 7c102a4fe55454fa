import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, ServerProcess, sleep } from '../faults/support.js';

/**
 * `agent-sts serve` with only PORT changed and no ISSUER, as the README's quick start and walk-through run it:
 * the issuer follows the port, so discovery, the JWKS and the tokens agree, and the start-up log says which issuer
 * is used (and warns that it was not set when the server listens beyond this machine).
 */
describe('the default issuer', () => {
  const dirs: string[] = [];
  const servers: ServerProcess[] = [];
  afterAll(async () => {
    for (const s of servers) await s.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  async function serve(env: Record<string, string>): Promise<ServerProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'agent-sts-issuer-'));
    dirs.push(dir);
    const server = new ServerProcess(await freePort(), { ISSUER: '', DATA_DIR: dir, LOG_LEVEL: 'info', ...env });
    servers.push(server);
    await server.start();
    return server;
  }

  it('is http://localhost:<PORT>: discovery, the JWKS and the tokens name it, and a token verifies against it', async () => {
    const server = await serve({ HOST: '0.0.0.0' });
    const issuer = `http://localhost:${server.port}`;
    const meta = await (await fetch(`${issuer}/.well-known/oauth-authorization-server`)).json() as Record<string, string>;
    expect(meta.issuer).toBe(issuer);
    expect(meta.jwks_uri).toBe(`${issuer}/jwks`);
    expect(meta.token_endpoint).toBe(`${issuer}/token`);

    const agent = await server.registerAgent('issuer-default');
    const res = await fetch(meta.token_endpoint!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: agent.authorization },
      body: 'grant_type=client_credentials',
    });
    expect(res.status).toBe(200);
    const { access_token: token } = await res.json() as { access_token: string };
    // The walk-through's step 3: verified with the keys from the issuer's /jwks and the issuer as the expected iss.
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(`${issuer}/jwks`)), { issuer, audience: 'https://tools.example/mcp', typ: 'at+jwt' });
    expect(payload.sub).toBe(agent.id);

    const lines = server.output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string; issuer?: string });
    expect(lines.find((l) => l.msg === 'agent-sts listening')).toMatchObject({ issuer });
    const warning = lines.find((l) => l.level === 40 && l.msg.startsWith('ISSUER is not set'));
    expect(warning, server.output).toMatchObject({ issuer });
    expect(warning!.msg).toContain(issuer);
  }, 90_000);

  it('is not warned about on a loopback address', async () => {
    const server = await serve({ HOST: '127.0.0.1' });
    await sleep(200);
    expect(server.output).toContain(`"issuer":"http://localhost:${server.port}"`);
    expect(server.output).not.toContain('ISSUER is not set');
  }, 90_000);
});
