import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';

const cli = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { encoding: 'utf8', timeout: 30_000 });
const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});

describe('agent-sts guard (command line)', () => {
  it('refuses missing or bad options with exit code 2 and the usage', () => {
    const missing = cli(['guard', '--port', '0', '--issuer', 'http://127.0.0.1:1', '--resource', 'https://r.example']);
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/--upstream is required/);
    expect(missing.stderr).toMatch(/usage: agent-sts/);
    const badPort = cli(['guard', '--upstream', 'http://127.0.0.1:1', '--port', 'x', '--issuer', 'http://127.0.0.1:1', '--resource', 'r']);
    expect(badPort.status).toBe(2);
    const unknown = cli(['guard', '--nope']);
    expect(unknown.status).toBe(2);
  });

  it('starts in one command and answers its protected-resource metadata and 401s', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'guard', '--upstream', 'http://127.0.0.1:9', '--port', String(port),
      '--issuer', 'http://127.0.0.1:9', '--resource', 'https://tools.example/mcp'], { env: { ...process.env, LOG_LEVEL: 'silent' } });
    try {
      let meta: Response | undefined;
      for (let i = 0; i < 100 && !meta; i++) {
        meta = await fetch(`http://127.0.0.1:${port}/.well-known/oauth-protected-resource`).catch(() => undefined);
        if (!meta) await new Promise((r) => setTimeout(r, 100));
      }
      expect(meta?.status).toBe(200);
      expect(await meta!.json()).toMatchObject({ resource: 'https://tools.example/mcp', authorization_servers: ['http://127.0.0.1:9'] });
      const refused = await fetch(`http://127.0.0.1:${port}/mcp`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
      expect(refused.status).toBe(401);
    } finally {
      child.kill();
    }
  });
});
