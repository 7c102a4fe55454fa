/**
 * Shared by the HTTP benchmarks: servers in child processes, a throwaway PostgreSQL database, agent
 * registration, autocannon load that fails on any answer other than 2xx, and min/median/max summaries.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Agent, request } from 'node:http';
import autocannon from 'autocannon';
import pg from 'pg';
import type { MemorySample } from './child-ready.js';

export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const ADMIN_TOKEN = 'bench-admin-token-0123456789abcdef0123456789';

export const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});

/** V8 flags of `npm start`: the old generation may double its live size before the next full collection (V8's own
 * factor goes up to 4), which keeps the resident set under load down. */
export const SERVER_NODE_FLAGS = ['--heap-growing-percent=100'];

/**
 * Forks a server script and resolves when it reports that it listens: a `.ts` script under tsx, a `.js` one
 * (compiled by `tsc -p tsconfig.bench.json` into dist/) under node with source maps, as `npm start` runs it.
 */
export function startChild(script: string, env: Record<string, string>): Promise<ChildProcess> {
  const server = script.includes('agent-sts');
  // agent-sts runs with the V8 flags `npm start` and the container image give it (package.json, Dockerfile).
  const extra = server ? [...SERVER_NODE_FLAGS, ...(process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [])] : [];
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
    MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2', MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ ?? '131072', PORT: String(port), HOST: '127.0.0.1', ISSUER: url, DATABASE_URL: databaseUrl,
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

/**
 * Open-loop load at a steady rate, as a server sees it from many independent clients: requests due evenly
 * spaced (one every 1/rate s), each sent on a free keep-alive connection (at most `connections`; a request
 * finding none waits, and the wait counts in its latency). Requests are sent when due whatever the answers
 * to earlier ones, so a slow answer can't hold back the requests behind it (no coordinated omission); the
 * latency is counted from the send (the generator's 1 ms timer is not the server's fault). autocannon's
 * `overallRate` instead lets each connection send its budget for the second back to back and then pause:
 * half the peak rate is then a burst at the full rate for half of every second. Throws on any answer other
 * than 2xx.
 */
export async function paced(o: LoadOptions & { rate: number }): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: o.connections });
  const target = new URL(o.url);
  const latencies: number[] = [];
  const total = Math.round(o.rate * o.duration);
  let failure: string | undefined;
  const send = () => new Promise<void>((resolve) => {
    const sentAt = performance.now();
    const body = typeof o.body === 'string' ? o.body : o.body();
    const req = request({
      agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST',
      headers: { authorization: o.auth, 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode! < 200 || res.statusCode! >= 300) failure ??= `HTTP ${res.statusCode}`;
        latencies.push(performance.now() - sentAt);
        resolve();
      });
    });
    req.on('error', (err) => {
      failure ??= err.message;
      resolve();
    });
    req.end(body);
  });
  const inFlight: Promise<void>[] = [];
  const start = performance.now() + 5;
  let sent = 0;
  while (sent < total) {
    const dueNow = Math.min(total, Math.floor(((performance.now() - start) * o.rate) / 1000) + 1);
    for (; sent < dueNow; sent++) inFlight.push(send());
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inFlight);
  agent.destroy();
  if (failure) throw new Error(`${o.url}: paced load failed: ${failure}`);
  const sorted = latencies.sort((a, b) => a - b);
  const at = (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 10) / 10;
  return { rps: (total * 1000) / (performance.now() - start), p50: at(0.5), p99: at(0.99), requests: total };
}

/** CPU seconds (user + system) of a process's main thread and of all its threads, from /proc (Linux). */
export function processCpu(pid: number): { main: number; all: number } {
  const seconds = (stat: string) => {
    const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  };
  return { main: seconds(readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8')), all: seconds(readFileSync(`/proc/${pid}/stat`, 'utf8')) };
}

/** CPU seconds of every PostgreSQL server process on this machine (0 where /proc can't tell). */
export function postgresCpu(): number {
  let total = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.includes('(postgres)')) total += processCpu(Number(pid)).all;
    } catch {
      // The process ended while we looked.
    }
  }
  return total;
}

/** How often sampleMemory asks a child for its memory. */
export const MEMORY_INTERVAL_MS = 500;

/**
 * Asks a child started by startChild (see child-ready.ts) for its memory every MEMORY_INTERVAL_MS until `stop`,
 * which returns the samples (ms since start).
 */
export function sampleMemory(child: ChildProcess) {
  const samples: (MemorySample & { at: number })[] = [];
  const start = Date.now();
  const onMessage = (m: unknown) => {
    const memory = (m as { memory?: MemorySample } | undefined)?.memory;
    if (memory) samples.push({ ...memory, at: Date.now() - start });
  };
  child.on('message', onMessage);
  const ask = () => child.send('memory');
  ask();
  const timer = setInterval(ask, MEMORY_INTERVAL_MS);
  return async () => {
    clearInterval(timer);
    await new Promise((r) => setTimeout(r, 100));
    child.off('message', onMessage);
    return samples;
  };
}

/** A load, with the child's memory sampled while it ran. */
export async function sampledLoad(child: ChildProcess, options: LoadOptions) {
  const stop = sampleMemory(child);
  const result = await load(options);
  return { result, samples: await stop() };
}

/** CPU time per request (µs) while a load ran: the server's main thread, all its threads, and PostgreSQL. */
export interface CpuPerRequest { main: number; process: number; postgres: number }
export type Measured = LoadResult & { cpu: CpuPerRequest };

/** A load, with the CPU the server `pid` (and PostgreSQL) spent on each request of it. */
export async function measured(o: LoadOptions, pid: number): Promise<Measured> {
  const before = processCpu(pid);
  const pgBefore = postgresCpu();
  const result = await load(o);
  const after = processCpu(pid);
  const perRequest = (seconds: number) => (seconds * 1e6) / result.requests;
  return { ...result, cpu: { main: perRequest(after.main - before.main), process: perRequest(after.all - before.all), postgres: perRequest(postgresCpu() - pgBefore) } };
}

export const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const summary = (xs: readonly number[]) => ({ min: Math.min(...xs), median: median(xs), max: Math.max(...xs) });
/** `min …, median …, max …` of a list, with `digits` decimals. */
export const mmm = (xs: readonly number[], digits = 2) => {
  const s = summary(xs);
  return `min ${s.min.toFixed(digits)}, median ${s.median.toFixed(digits)}, max ${s.max.toFixed(digits)}`;
};
