/**
 * Shared by the HTTP benchmarks: servers in child processes, a throwaway PostgreSQL database, agent
 * registration, autocannon load that fails on any answer other than 2xx, and min/median/max summaries.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { connect as netConnect, createServer, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
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

/**
 * V8 flags of `npm start`: the old generation may grow to (100 + HEAP_GROWING_PERCENT) % of its live size
 * before the next full collection (V8's own factor goes up to 4); 100, the default, keeps the resident set
 * under load down, a higher one makes full collections rarer (see the README's Benchmarks).
 */
const serverNodeFlags = (env: Record<string, string | undefined>) => [`--heap-growing-percent=${env.HEAP_GROWING_PERCENT ?? process.env.HEAP_GROWING_PERCENT ?? '100'}`];

/**
 * Forks a server script and resolves when it reports that it listens: a `.ts` script under tsx, a `.js` one
 * (compiled by `tsc -p tsconfig.bench.json` into dist/) under node with source maps, as `npm start` runs it.
 */
export function startChild(script: string, env: Record<string, string>): Promise<ChildProcess> {
  const server = script.includes('agent-sts');
  // agent-sts runs with the V8 flags `npm start` and the container image give it (package.json, Dockerfile).
  const extra = server ? [...serverNodeFlags(env), ...(process.env.BENCH_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? [])] : [];
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
 * spaced (one every 1/rate s), each sent on a free keep-alive connection (at most `connections`, opened as
 * needed; a request finding none waits, and the wait counts in its latency). Requests are sent when due
 * whatever the answers to earlier ones, so a slow answer can't hold back the requests behind it (no
 * coordinated omission); the latency is counted from the send (the generator's 1 ms timer is not the
 * server's fault). The requests are written on plain sockets and only the status line and Content-Length
 * of each answer are read: on a 2-core machine the generator shares the CPU with the server, and node's
 * HTTP client spent several times as much per request (a plain provider's p99 at the same rate measured
 * 7.9-13.4 ms with it, 6.6-9 ms with this). autocannon's `overallRate` instead lets each connection send
 * its budget for the second back to back and then pause: half the peak rate is then a burst at the full
 * rate for half of every second. The first second's answers are not counted: connections are opened then.
 * Throws on any answer other than 2xx.
 */
export async function paced(o: LoadOptions & { rate: number }): Promise<LoadResult> {
  const target = new URL(o.url);
  const total = Math.round(o.rate * o.duration);
  const head = `POST ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nAuthorization: ${o.auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n`;
  const requestText = () => {
    const body = typeof o.body === 'string' ? o.body : o.body();
    return `${head}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  };
  const latencies: number[] = [];
  let answered = 0;
  const waiting: number[] = [];
  const idle: PacedConnection[] = [];
  const open: PacedConnection[] = [];
  let failure: string | undefined;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => { finish = resolve; });
  const fail = (why: string) => {
    failure ??= why;
    finish();
  };
  const connect = (firstDueAt: number) => {
    const c = new PacedConnection(target, requestText, {
      answered(conn, status, latency, dueAt) {
        if (status < 200 || status >= 300) fail(`HTTP ${status}`);
        if (dueAt >= counted) latencies.push(latency);
        if (++answered === total) finish();
        const next = waiting.shift();
        if (next !== undefined) conn.send(next);
        else idle.push(conn);
      },
      closed(conn, unanswered) {
        const i = idle.indexOf(conn);
        if (i >= 0) idle.splice(i, 1);
        open.splice(open.indexOf(conn), 1);
        // The server may close a keep-alive connection as a request goes out: send it again on a new one.
        if (unanswered !== undefined) connect(unanswered);
      },
      failed: fail,
    });
    open.push(c);
    c.sendOnConnect(firstDueAt);
  };
  const start = performance.now() + 5;
  const counted = start + 1000;
  let sent = 0;
  while (sent < total && !failure) {
    const dueNow = Math.min(total, Math.floor(((performance.now() - start) * o.rate) / 1000) + 1);
    for (; sent < dueNow; sent++) {
      const now = performance.now();
      const c = idle.pop();
      if (c) c.send(now);
      else if (open.length < o.connections) connect(now);
      else waiting.push(now);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  if (!failure) await finished;
  for (const c of [...open]) c.close();
  if (failure) throw new Error(`${o.url}: paced load failed: ${failure}`);
  const sorted = latencies.sort((a, b) => a - b);
  const at = (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 10) / 10;
  return { rps: (total * 1000) / (performance.now() - start), p50: at(0.5), p99: at(0.99), requests: total };
}

/** One keep-alive connection of `paced`: one request at a time, answers read by their Content-Length. */
class PacedConnection {
  private sentAt: number | undefined;
  private buffered: Buffer = Buffer.alloc(0);
  private readonly socket: Socket;

  constructor(target: URL, private readonly requestText: () => string, private readonly on: {
    answered(c: PacedConnection, status: number, latency: number, dueAt: number): void;
    closed(c: PacedConnection, unanswered: number | undefined): void;
    failed(why: string): void;
  }) {
    this.socket = netConnect(Number(target.port), target.hostname);
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => this.read(chunk));
    this.socket.on('error', () => { /* 'close' follows */ });
    this.socket.on('close', () => {
      const unanswered = this.sentAt;
      this.sentAt = undefined;
      this.on.closed(this, unanswered);
    });
  }

  sendOnConnect(dueAt: number) {
    this.socket.once('connect', () => this.send(dueAt));
  }

  send(dueAt: number) {
    this.sentAt = dueAt;
    this.socket.write(this.requestText());
  }

  close() {
    this.sentAt = undefined;
    this.socket.destroy();
  }

  private read(chunk: Buffer) {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const end = this.buffered.indexOf('\r\n\r\n');
    if (end < 0 || this.sentAt === undefined) return;
    const header = this.buffered.subarray(0, end).toString('latin1');
    const length = /\r\ncontent-length: *(\d+)/i.exec(header);
    if (!length) {
      this.on.failed(`an answer without Content-Length: ${header.slice(0, 200)}`);
      return;
    }
    const size = end + 4 + Number(length[1]);
    if (this.buffered.length < size) return;
    const dueAt = this.sentAt;
    this.sentAt = undefined;
    this.buffered = this.buffered.subarray(size);
    this.on.answered(this, Number(header.slice(9, 12)), performance.now() - dueAt, dueAt);
  }
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
