import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, freePort, REPO_ROOT, ServerProcess, TRUST_DOMAIN } from '../faults/support.js';

function bash(script: string, env: Record<string, string>): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [script], { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(), ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** examples/three-hop-delegation.sh against a server on a port other than 8080, found by $AS as the README's snippets do. */
describe('examples/three-hop-delegation.sh', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-three-hop-'));
  let server: ServerProcess;
  beforeAll(async () => {
    server = new ServerProcess(await freePort(), { DATA_DIR: dataDir });
    await server.start();
  }, 120_000);
  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs the three hops, the Txn-Token, the lineage and the cascade revocation', async () => {
    const res = await bash('examples/three-hop-delegation.sh', { AS: server.url, ADMIN: ADMIN_TOKEN, TRUST_DOMAIN });
    expect(res.status, res.stderr + res.stdout).toBe(0);
    const lines = res.stdout.trim().split('\n');
    // The lineage: T0 and T1 above T2, the Txn-Token below it.
    const lineage = JSON.parse(lines.at(-3)!) as { ancestors: [string, string][]; descendants: [string, string][] };
    expect(lineage.ancestors.map(([, client]) => client)).toEqual([`spiffe://${TRUST_DOMAIN}/agents/app`, `spiffe://${TRUST_DOMAIN}/agents/orchestrator`]);
    expect(lineage.descendants.map(([type]) => type)).toContain('txn_token');
    // Revoking the app's token (200) leaves the specialist's token inactive.
    expect(lines.at(-2)).toBe('200');
    expect(JSON.parse(lines.at(-1)!)).toEqual({ active: false });
  }, 120_000);

  it('says what is missing when ADMIN is not set', async () => {
    const res = await bash('examples/three-hop-delegation.sh', { AS: server.url });
    expect(res.status).not.toBe(0);
    expect(res.stderr).toMatch(/ADMIN.*admin token/);
  });
});
