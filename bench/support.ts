/**
 * Shared by the HTTP benchmarks: servers in child processes, a throwaway PostgreSQL database, agent
 * registration, autocannon load that fails on any answer other than 2xx, and min/median/max summaries.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import pg from 'pg';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const ADMIN_TOKEN = 'bench-admin-token-0123456789abcdef0123456789';

export const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});

/**
 * Forks a server script and resolves when it reports that it listens: a `.ts` script under tsx, a `.js` one
 * (compiled by `tsc -p tsconfig.bench.json` into dist/) under node with source maps, as `npm start` runs it.
 */
export function startChild(script: string, env: Record<string, string>): Promise<ChildProcess> {
  const extra = script.includes('agent-sts') && process.env.BENCH_SERVER_NODE_ARGS ? process.env.BENCH_SERVER_NODE_ARGS.split(' ') : [];
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : ['--enable-source-maps'];
  const child = fork(script, [], { execArgv: [...loader, ...extra], env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

/** A fresh database on the PostgreSQL server of DATABASE_URL, dropped by `drop`. */
export async function benchDatabase() {
  const name = `agent_sts_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const url = new URL(DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    count: async (table: string) => Number((await admin.query(`select count(*)::int as n from ${table}`)).rows[0]?.n ?? 0),
    drop: async () => {
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

export interface AgentSts {
  url: string;
  child: ChildProcess;
  register(registration: Record<string, unknown>): Promise<{ id: string; auth: string }>;
}

/**
 * agent-sts in a child process on the given database, as bench/token-endpoint.ts measures it; with glibc's
 * malloc limited to two arenas, as `npm start` and the container image run it.
 */
export async function startAgentSts(databaseUrl: string, env: Record<string, string> = {}, script = 'bench/agent-sts-server.ts'): Promise<AgentSts> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = await startChild(script, {
    MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2', PORT: String(port), HOST: '127.0.0.1', ISSUER: url, DATABASE_URL: databaseUrl,
    AGENT_STS_ADMIN_TOKEN: ADMIN_TOKEN, LOG_LEVEL: 'silent', DATABASE_POOL_MAX: '16', ...env,
  });
  return {
    url, child,
    async register(registration) {
      const res = await fetch(`${url}/admin/agents`, {
        method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(registration),
      });
      if (!res.ok) throw new Error(`registering ${String(registration.id)}: HTTP ${res.status} ${await res.text()}`);
      const { client_secret: secret } = (await res.json()) as { client_secret: string };
      const id = String(registration.id);
      return { id, auth: basicAuth(id, secret) };
    },
  };
}

export const basicAuth = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

/** Stops the children and waits a moment so they can let go of their connections. */
export async function stopChildren(children: ChildProcess[]): Promise<void> {
  for (const c of children) c.kill();
  await new Promise((r) => setTimeout(r, 300));
}

export interface LoadOptions {
  url: string;
  auth: string;
  /** A fixed form body, or a function giving the body of each request. */
  body: string | (() => string);
  duration: number;
  connections: number;
  /** Requests per second over all connections; unset: as fast as the server answers. */
  rate?: number;
}

export interface LoadResult { rps: number; p50: number; p99: number; requests: number }

/** POSTs a form with autocannon; throws when a single answer is not 2xx, or a request failed or timed out. */
export async function load(o: LoadOptions): Promise<LoadResult> {
  const headers = { authorization: o.auth, 'content-type': 'application/x-www-form-urlencoded' };
  const body = o.body;
  const result = await autocannon({
    url: o.url, method: 'POST', duration: o.duration, connections: o.connections, ...(o.rate ? { overallRate: o.rate } : {}), headers,
    ...(typeof body === 'string' ? { body } : { requests: [{ setupRequest: (req) => ({ ...req, body: body() }) }] }),
  });
  if (result.non2xx || result.errors || result.timeouts) {
    // One more request of the same kind shows what the refusals said.
    const sample = await fetch(o.url, { method: 'POST', headers, body: typeof body === 'string' ? body : body() })
      .then(async (r) => `HTTP ${r.status} ${(await r.text()).slice(0, 300)}`, (err: Error) => err.message);
    throw new Error(`${o.url}: ${result.non2xx} non-2xx answers, ${result.errors} errors, ${result.timeouts} timeouts `
      + `(status codes ${JSON.stringify(result.statusCodeStats ?? {})}); one more request: ${sample}`);
  }
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, requests: result.requests.total };
}

export const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const summary = (xs: readonly number[]) => ({ min: Math.min(...xs), median: median(xs), max: Math.max(...xs) });
/** `min …, median …, max …` of a list, with `digits` decimals. */
export const mmm = (xs: readonly number[], digits = 2) => {
  const s = summary(xs);
  return `min ${s.min.toFixed(digits)}, median ${s.median.toFixed(digits)}, max ${s.max.toFixed(digits)}`;
};
