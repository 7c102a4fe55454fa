import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer as netServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeJwt } from 'jose';
import { freePort, TRUST_DOMAIN } from '../support/test-server.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const ADMIN_TOKEN = 'faults-admin-token-0123456789abcdef0123456789abcdef';
export { TRUST_DOMAIN };

export { freePort };

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve({ stdout, stderr });
    });
  });
}

/**
 * The directory holding PostgreSQL's server programs (initdb, pg_ctl): `PG_BIN`, else the newest
 * /usr/lib/postgresql/<version>/bin, else `pg_config --bindir`.
 */
export function findPgBin(): string | undefined {
  const has = (dir: string) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'));
  if (process.env.PG_BIN) return has(process.env.PG_BIN) ? process.env.PG_BIN : undefined;
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).filter((v) => /^\d+(\.\d+)?$/.test(v)).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (has(join(base, v, 'bin'))) return join(base, v, 'bin');
  }
  const cfg = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  const dir = cfg.status === 0 ? cfg.stdout.trim() : '';
  return dir && has(dir) ? dir : undefined;
}

/**
 * A PostgreSQL cluster of the test's own in a temporary directory, so the test can stop and start it.
 * initdb refuses to run as root: as root, the programs run as the `postgres` user, which owns the directory.
 */
export class PgCluster {
  readonly dir = mkdtempSync(join(tmpdir(), 'agent-sts-pg-'));
  private readonly data = join(this.dir, 'data');
  private readonly socketDir = join(this.dir, 'sock');
  private readonly runAs: string | undefined;

  private constructor(private readonly bin: string, readonly port: number) {
    mkdirSync(this.socketDir);
    if (process.getuid?.() === 0) {
      this.runAs = 'postgres';
      const uid = Number(spawnSync('id', ['-u', this.runAs], { encoding: 'utf8' }).stdout.trim());
      const gid = Number(spawnSync('id', ['-g', this.runAs], { encoding: 'utf8' }).stdout.trim());
      if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('running as root and there is no postgres user to run PostgreSQL as');
      chownSync(this.dir, uid, gid);
      chownSync(this.socketDir, uid, gid);
    }
  }

  static async create(bin: string): Promise<PgCluster> {
    const cluster = new PgCluster(bin, await freePort());
    try {
      await cluster.pg('initdb', ['-D', cluster.data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
      await cluster.start();
    } catch (err) {
      await cluster.destroy();
      throw err;
    }
    return cluster;
  }

  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  private pg(program: string, args: string[]) {
    const path = join(this.bin, program);
    return this.runAs ? run('runuser', ['-u', this.runAs, '--', path, ...args]) : run(path, args);
  }

  async start(): Promise<void> {
    await this.pg('pg_ctl', ['-D', this.data, '-l', join(this.dir, 'postgres.log'), '-w', '-t', '60',
      '-o', `-p ${this.port} -k ${this.socketDir} -c listen_addresses=127.0.0.1`, 'start']);
  }

  /** `pg_ctl stop -m immediate`: every backend is killed at once, as in a crash. */
  async stopImmediate(): Promise<void> {
    await this.pg('pg_ctl', ['-D', this.data, '-m', 'immediate', '-w', '-t', '60', 'stop']);
  }

  private postmasterPid(): number {
    return Number.parseInt(readFileSync(join(this.data, 'postmaster.pid'), 'utf8'), 10);
  }

  /** The pids of the postmaster's children (backends and helper processes), read without blocking the event loop. */
  private async children(postmaster: number): Promise<number[]> {
    const { stdout } = await new Promise<{ stdout: string }>((resolve) => {
      execFile('ps', ['-o', 'pid=', '--ppid', String(postmaster)], { encoding: 'utf8' }, (_err, out) => resolve({ stdout: out ?? '' }));
    });
    return stdout.split('\n').map((l) => Number.parseInt(l.trim(), 10)).filter((n) => n > 0);
  }

  /**
   * SIGSTOP on the postmaster (first, so it forks nothing new) and then every backend: the server hangs, its
   * sockets stay open and the kernel still accepts connections (like a partition).
   */
  async freeze(): Promise<void> {
    const postmaster = this.postmasterPid();
    process.kill(postmaster, 'SIGSTOP');
    for (const pid of await this.children(postmaster)) process.kill(pid, 'SIGSTOP');
  }

  /** SIGCONT on them again. */
  async thaw(): Promise<void> {
    const postmaster = this.postmasterPid();
    for (const pid of [...await this.children(postmaster), postmaster]) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch { /* exited meanwhile */ }
    }
  }

  log(): string {
    try {
      return readFileSync(join(this.dir, 'postgres.log'), 'utf8');
    } catch {
      return '';
    }
  }

  async destroy(): Promise<void> {
    if (existsSync(join(this.data, 'postmaster.pid'))) {
      await this.thaw().catch(() => { /* not running */ });
      await this.stopImmediate().catch(() => {
        // pg_ctl failed: kill the postmaster by its pid file.
        try {
          const pid = Number.parseInt(readFileSync(join(this.data, 'postmaster.pid'), 'utf8'), 10);
          if (pid > 0) process.kill(pid, 'SIGKILL');
        } catch { /* already gone */ }
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** `agent-sts serve` in a child process, so it can be killed with SIGKILL. */
export class ServerProcess {
  child: ChildProcess | undefined;
  output = '';
  readonly url: string;
  private exited: Promise<void> = Promise.resolve();

  constructor(readonly port: number, private readonly env: Record<string, string>) {
    this.url = `http://127.0.0.1:${port}`;
  }

  /** Starts the server and waits until `/readyz` answers 200. */
  async start(timeoutMs = 60_000): Promise<void> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? tmpdir(),
      ISSUER: this.url,
      PORT: String(this.port),
      HOST: '127.0.0.1',
      TRUST_DOMAIN,
      AGENT_STS_ADMIN_TOKEN: ADMIN_TOKEN,
      LOG_LEVEL: 'warn',
      ...this.env,
    };
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const append = (chunk: Buffer) => {
      this.output += chunk.toString();
      if (this.output.length > 4_000_000) this.output = this.output.slice(-2_000_000);
    };
    child.stdout!.on('data', append);
    child.stderr!.on('data', append);
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`agent-sts exited (${child.exitCode ?? child.signalCode}) while starting:\n${this.output}`);
      try {
        const res = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2_000) });
        if (res.status === 200) return;
      } catch { /* not listening yet */ }
      await sleep(100);
    }
    throw new Error(`agent-sts did not become ready within ${timeoutMs} ms:\n${this.output}`);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGKILL, then wait for the process to be gone. */
  async kill9(): Promise<void> {
    if (!this.running) return;
    this.child!.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM (a clean shutdown), SIGKILL after the timeout. Returns the exit code (null when killed). */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    if (!this.running) return this.child?.exitCode ?? null;
    this.child!.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
    return this.child!.exitCode;
  }

  async admin(method: string, path: string, body?: unknown): Promise<{ status: number; body: any; ms: number }> {
    const t0 = performance.now();
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: res.status, body: parsed, ms: performance.now() - t0 };
  }

  /** Registers an agent with a client secret; returns its Basic authorization header. */
  async registerAgent(name: string): Promise<{ id: string; authorization: string }> {
    const id = `spiffe://${TRUST_DOMAIN}/agents/${name}`;
    const res = await this.admin('POST', '/admin/agents', { id, scopes: ['tools:call'], audiences: ['https://tools.example/mcp'] });
    if (res.status !== 201) throw new Error(`agent registration failed: ${res.status} ${JSON.stringify(res.body)}`);
    const secret = (res.body as { client_secret: string }).client_secret;
    return { id, authorization: `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}` };
  }

  /** Every token record's jti, from the streamed audit export. */
  async recordedJtis(): Promise<string[]> {
    const res = await fetch(`${this.url}/admin/audit?kind=token`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal: AbortSignal.timeout(60_000) });
    if (res.status !== 200) throw new Error(`audit export: ${res.status} ${await res.text()}`);
    return (await res.text()).split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { jti: string }).jti);
  }
}

export interface Outcome {
  /** When the request was sent and answered, in ms since the load started. */
  start: number;
  end: number;
  status: number | 'error';
  error?: string;
  body?: { error?: string; access_token?: string };
  jti?: string;
}

/** Client-credentials requests from `clients` concurrent clients until `stop()`; every outcome is kept. */
export class Load {
  readonly outcomes: Outcome[] = [];
  private readonly t0 = performance.now();
  private stopped = false;
  private readonly done: Promise<void[]>;

  constructor(private readonly url: string, private readonly authorization: string, clients = 8, private readonly timeoutMs = 10_000) {
    this.done = Promise.all(Array.from({ length: clients }, () => this.client()));
  }

  now(): number {
    return performance.now() - this.t0;
  }

  private async client(): Promise<void> {
    while (!this.stopped) {
      const start = this.now();
      const outcome: Outcome = { start, end: start, status: 'error' };
      try {
        const res = await fetch(`${this.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: this.authorization },
          body: 'grant_type=client_credentials',
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        outcome.status = res.status;
        const text = await res.text();
        try {
          outcome.body = JSON.parse(text) as Outcome['body'];
        } catch {
          outcome.error = `not JSON: ${text.slice(0, 200)}`;
        }
        if (res.status === 200 && typeof outcome.body?.access_token === 'string') outcome.jti = decodeJwt(outcome.body.access_token).jti;
      } catch (err) {
        outcome.error = `${(err as Error).name}: ${(err as Error).message}`;
      }
      outcome.end = this.now();
      this.outcomes.push(outcome);
      // Refusals and failed connections come back at once; don't spin on them.
      if (outcome.status !== 200) await sleep(20);
    }
  }

  async stop(): Promise<Outcome[]> {
    this.stopped = true;
    await this.done;
    return this.outcomes;
  }

  /** Waits until `predicate` holds for an outcome that ended after `since`; resolves with the time it did. */
  async waitFor(predicate: (o: Outcome) => boolean, since: number, timeoutMs: number): Promise<number | undefined> {
    const deadline = this.now() + timeoutMs;
    while (this.now() < deadline) {
      const hit = this.outcomes.find((o) => o.end >= since && predicate(o));
      if (hit) return hit.end;
      await sleep(25);
    }
    return undefined;
  }
}

export function summarize(outcomes: Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) {
    const key = o.status === 'error' ? 'error' : o.status === 200 ? '200' : `${o.status} ${o.body?.error ?? ''}`.trim();
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/** One connection through a {@link TcpProxy}, as the proxy saw it. */
export interface ProxiedConnection {
  /** When the client sent bytes the server has not answered yet (ms, performance.now()); undefined when none. */
  waitingSince: number | undefined;
  /** The longest the client waited with unanswered bytes before it closed the connection, if it closed it so. */
  closedAfterWaiting: number | undefined;
  closedAt: number | undefined;
  /** Cut off by a partition: nothing passes either way any more. */
  cut: boolean;
}

/**
 * A TCP proxy (node net) between agent-sts and PostgreSQL. `partition()` makes every connection open at that time,
 * and every one opened during it, stop forwarding for good (bytes are dropped, sockets stay open): a network path
 * that died. `heal()` lets new connections through again; the cut ones stay dead until a side closes them.
 */
export class TcpProxy {
  readonly connections: ProxiedConnection[] = [];
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private partitioned = false;
  private readonly live = new Set<ProxiedConnection>();

  private constructor(private readonly targetPort: number) {
    this.server = netServer((client) => {
      const conn: ProxiedConnection = { waitingSince: undefined, closedAfterWaiting: undefined, closedAt: undefined, cut: this.partitioned };
      this.connections.push(conn);
      this.live.add(conn);
      const upstream = netConnect(this.targetPort, '127.0.0.1');
      this.sockets.add(client);
      this.sockets.add(upstream);
      client.on('data', (chunk) => {
        conn.waitingSince ??= performance.now();
        if (!conn.cut) upstream.write(chunk);
      });
      upstream.on('data', (chunk) => {
        if (conn.cut) return;
        conn.waitingSince = undefined;
        client.write(chunk);
      });
      const close = (byClient: boolean) => {
        if (conn.closedAt !== undefined) return;
        conn.closedAt = performance.now();
        if (byClient && conn.waitingSince !== undefined) conn.closedAfterWaiting = conn.closedAt - conn.waitingSince;
        this.live.delete(conn);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', () => close(true));
      client.on('error', () => close(true));
      upstream.on('close', () => close(false));
      upstream.on('error', () => close(false));
    });
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetPort);
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  partition(): void {
    this.partitioned = true;
    for (const c of this.live) c.cut = true;
  }

  heal(): void {
    this.partitioned = false;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
