/**
 * Token endpoint throughput: agent-sts (client credentials, JWT access tokens, every token recorded in
 * PostgreSQL) against a plain oidc-provider with an in-memory adapter issuing the same token, each server in
 * its own process and the load from autocannon in this one, in alternating rounds.
 * Needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test). Run: npm run bench:token
 * Profile the server while it runs: BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench:token
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import pg from 'pg';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DURATION = Number(process.env.DURATION ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 16);
const BASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const ADMIN = 'bench-admin-token-0123456789abcdef0123456789';

const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});

function start(script: string, env: Record<string, string>): Promise<ChildProcess> {
  const child = fork(script, [], { execArgv: ['--import', 'tsx', ...(script.includes('agent-sts') && process.env.BENCH_SERVER_NODE_ARGS ? process.env.BENCH_SERVER_NODE_ARGS.split(' ') : [])], env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

async function load(url: string, auth: string, rate?: number) {
  const result = await autocannon({
    url, method: 'POST', duration: DURATION, connections: CONNECTIONS, ...(rate ? { overallRate: rate } : {}),
    headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=client_credentials',
  });
  if (result.non2xx) throw new Error(`${url}: ${result.non2xx} non-2xx answers`);
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99 };
}

const dbName = `agent_sts_bench_${randomBytes(4).toString('hex')}`;
const admin = new pg.Client({ connectionString: BASE_URL });
await admin.connect();
await admin.query(`create database ${dbName}`);
const dbUrl = new URL(BASE_URL);
dbUrl.pathname = `/${dbName}`;

const oursPort = await freePort();
const basePort = await freePort();
const children: ChildProcess[] = [];
try {
  children.push(await start('bench/agent-sts-server.ts', {
    PORT: String(oursPort), HOST: '127.0.0.1', ISSUER: `http://127.0.0.1:${oursPort}`, DATABASE_URL: dbUrl.toString(),
    AGENT_STS_ADMIN_TOKEN: ADMIN, LOG_LEVEL: 'silent', DATABASE_POOL_MAX: '16',
  }));
  children.push(await start('bench/baseline-provider.ts', { PORT: String(basePort) }));
  const reg = await fetch(`http://127.0.0.1:${oursPort}/admin/agents`, {
    method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ id: 'spiffe://agent-sts.local/agents/bench', scopes: ['read'], audiences: ['https://api.example.com'] }),
  });
  const { client_secret: secret } = (await reg.json()) as { client_secret: string };
  const ours = { url: `http://127.0.0.1:${oursPort}/token`, auth: `Basic ${Buffer.from(`${encodeURIComponent('spiffe://agent-sts.local/agents/bench')}:${secret}`).toString('base64')}` };
  const base = { url: `http://127.0.0.1:${basePort}/token`, auth: `Basic ${Buffer.from('bench:bench-secret').toString('base64')}` };

  await load(ours.url, ours.auth);
  await load(base.url, base.auth);
  const runs: { ours: Awaited<ReturnType<typeof load>>; base: Awaited<ReturnType<typeof load>> }[] = [];
  for (let r = 0; r < ROUNDS; r++) runs.push({ ours: await load(ours.url, ours.auth), base: await load(base.url, base.auth) });
  const ratios = runs.map((r) => r.ours.rps / r.base.rps).sort((a, b) => a - b);
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const oursPeak = med(runs.map((r) => r.ours.rps));
  const half = await load(ours.url, ours.auth, Math.floor(oursPeak / 2));
  const records = await admin.query(`select count(*)::int as n from issued_tokens`).catch(() => undefined);
  void records;

  console.log(`token endpoint, client credentials, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${DURATION} s`);
  console.log('server                         | req/s min | median | max  | p99 ms (median)');
  for (const [name, key] of [['agent-sts (records in Postgres)', 'ours'], ['oidc-provider, in-memory', 'base']] as const) {
    const rps = runs.map((r) => r[key].rps);
    console.log(`${name.padEnd(30)} | ${Math.min(...rps).toFixed(0).padStart(9)} | ${med(rps).toFixed(0).padStart(6)} | ${Math.max(...rps).toFixed(0).padStart(4)} | ${med(runs.map((r) => r[key].p99))}`);
  }
  console.log(`throughput ratio agent-sts / baseline: min ${ratios[0]!.toFixed(2)}, median ${med(ratios).toFixed(2)}, max ${ratios.at(-1)!.toFixed(2)}`);
  console.log(`agent-sts at half its peak (${Math.floor(oursPeak / 2)} req/s): p50 ${half.p50} ms, p99 ${half.p99} ms`);
} finally {
  for (const c of children) c.kill();
  await new Promise((r) => setTimeout(r, 300));
  await admin.query(`drop database if exists ${dbName} with (force)`);
  await admin.end();
}
