import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, freePort, REPO_ROOT, ServerProcess } from '../faults/support.js';

/** The README's first `sh` block under the given heading. */
function readmeSnippet(heading: string): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf(`\n${heading}\n`));
  const match = /```sh\n([\s\S]*?)```/.exec(section);
  if (!match) throw new Error(`no sh block under ${heading}`);
  return match[1]!;
}

/**
 * The README's walk-through, run as written by a new user whose only change is PORT: a server started with
 * PORT and no ISSUER, the snippet run in a directory laid out like the repository (data/admin-token, jose
 * installed) with AS=http://localhost:<PORT>. Every step must work, step 3's verification with the issuer
 * included, and nothing is written into the directory it runs in.
 */
describe('README walk-through with curl, on another port', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-walk-through-data-'));
  const cwd = mkdtempSync(join(tmpdir(), 'agent-sts-walk-through-'));
  let server: ServerProcess;
  beforeAll(async () => {
    server = new ServerProcess(await freePort(), { ISSUER: '', TRUST_DOMAIN: 'agent-sts.local', DATA_DIR: dataDir, HOST: '127.0.0.1' });
    await server.start();
    mkdirSync(join(cwd, 'data'));
    writeFileSync(join(cwd, 'data', 'admin-token'), ADMIN_TOKEN);
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(cwd, 'node_modules'));
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(cwd, { recursive: true, force: true });
  });

  it('registers, gets a token, verifies it against the issuer, introspects, revokes, lists the records', async () => {
    const AS = `http://localhost:${server.port}`;
    // -e: a step that fails (node exits non-zero when jwtVerify refuses) fails the run.
    const res = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn('bash', ['-e', '-c', readmeSnippet('## Walk-through with curl')], {
        cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(), AS },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    expect(res.status, `${res.stderr}\n${res.stdout}`).toBe(0);
    expect(res.stderr).not.toMatch(/JWTClaimValidationFailed|Error/);
    // Step 3 printed the verified claims, with the issuer the server runs under.
    expect(res.stdout).toContain(`iss: '${AS}'`);
    expect(res.stdout).toContain('{"active":false}');
    expect(res.stdout).toContain('HTTP/1.1 200');
    // The client secret and the token went to the temporary directory, not the directory the snippet ran in.
    expect(readdirSync(cwd).sort()).toEqual(['data', 'node_modules']);
  }, 120_000);
});
