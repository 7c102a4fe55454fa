import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, freePort, REPO_ROOT, sleep } from '../faults/support.js';

/** The processes under `pid`, children first, from /proc (Linux). */
function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch { /* gone */ }
  return children.flatMap((c) => [c, ...descendants(c)]);
}

/** Alive and not a zombie waiting for its parent. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const cmdline = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
};

/**
 * Container runtimes and process managers signal the first process, which for `npm start` is npm: the
 * signal has to reach the server (the start script execs node) and the server has to shut down cleanly within
 * the usual grace period (10 s: docker stop, systemd's default is longer).
 */
describe.skipIf(process.platform !== 'linux')('npm start', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-npm-start-'));
  let serverPid: number | undefined;
  afterAll(() => {
    if (serverPid && alive(serverPid)) process.kill(serverPid, 'SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('SIGTERM to npm stops the server it started, cleanly and within 10 s', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const npm = spawn('npm', ['start'], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(),
        PORT: String(port), HOST: '127.0.0.1', ISSUER: url, DATA_DIR: dataDir, AGENT_STS_ADMIN_TOKEN: ADMIN_TOKEN, LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    npm.stdout!.on('data', (c: Buffer) => { output += c.toString(); });
    npm.stderr!.on('data', (c: Buffer) => { output += c.toString(); });
    const npmExited = new Promise<void>((resolve) => npm.once('exit', () => resolve()));

    // The first start after a source change compiles (see scripts/build-if-changed.mjs): allow for that.
    const deadline = Date.now() + 240_000;
    for (;;) {
      if (npm.exitCode !== null) throw new Error(`npm start exited (${npm.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`npm start did not become ready:\n${output}`);
      const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status === 200, () => false);
      if (ready) break;
      await sleep(200);
    }
    // node itself (a shell running the script would show `sh -c ...` first).
    serverPid = descendants(npm.pid!).find((pid) => /^(\S*\/)?node .*dist\/src\/cli\/main\.js serve/.test(cmdline(pid)));
    expect(serverPid, `no server process under npm (${npm.pid}):\n${output}`).toBeDefined();
    expect(existsSync(join(REPO_ROOT, 'dist', '.build-stamp'))).toBe(true);

    const t0 = Date.now();
    npm.kill('SIGTERM');
    while (alive(serverPid!) && Date.now() - t0 < 10_000) await sleep(50);
    expect(alive(serverPid!), `the server (${serverPid}) still runs ${Date.now() - t0} ms after SIGTERM to npm:\n${output}`).toBe(false);
    await Promise.race([npmExited, sleep(5_000)]);
    expect(npm.exitCode !== null || npm.signalCode !== null).toBe(true);
    // It shut down (closed its server and database) rather than being killed.
    expect(output).toMatch(/"signal":"SIGTERM".*"msg":"shutting down"/);
    await expect(fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) })).rejects.toThrow();
  }, 300_000);

  it('a second start with no source changed does not compile', () => {
    const stamp = join(REPO_ROOT, 'dist', '.build-stamp');
    const before = statSync(stamp).mtimeMs;
    const t0 = Date.now();
    const result = spawnSync(process.execPath, ['scripts/build-if-changed.mjs'], { cwd: REPO_ROOT, encoding: 'utf8' });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).not.toContain('compiling');
    expect(statSync(stamp).mtimeMs).toBe(before);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });
});
