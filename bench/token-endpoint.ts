/**
 * Token endpoint throughput: agent-sts (client credentials, JWT access tokens, every token recorded in
 * PostgreSQL) against a plain oidc-provider with an in-memory adapter issuing the same token, each server in
 * its own process and the load from autocannon in this one, in alternating rounds; with the CPU time each server
 * (and PostgreSQL) spent per request, read from /proc, which the machine's noise moves less than throughput.
 * Then the latency at half agent-sts's peak, as evenly spaced requests (see `paced`), for both servers; with
 * LATENCY_HEAP_GROWING_PERCENT set (say 500), also for agent-sts run with that HEAP_GROWING_PERCENT, the setting
 * that trades memory for rarer full garbage collections, on a database of its own, in alternating rounds.
 * With FEATURE_BASELINE=1, a third server in every round: the plain provider configured with the grants and
 * features agent-sts's provider has (see bench/baseline-provider.ts), to tell the provider's part of the gap.
 * Needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test). Run: npm run bench:token
 * With PROFILE=1, one more round per server with its main thread profiled (the inspector's sampler, see
 * bench/event-loop-profile.ts), printed side by side: where each spends its time per token, by kind of work.
 * Profile the server while it runs: BENCH_SERVER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" npm run bench:token
 */
import type { ChildProcess } from 'node:child_process';
import {
  basicAuth, benchDatabase, freePort, load, measured, median, mmm, paced, startAgentSts, startChild, stopChildren, type CpuPerRequest, type LoadOptions, type LoadResult, type Measured,
} from './support.js';
import { breakdown, printBreakdowns, profiledLoad } from './event-loop-profile.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DURATION = Number(process.env.DURATION ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 16);
const BODY = 'grant_type=client_credentials';
const LATENCY_GROWING = process.env.LATENCY_HEAP_GROWING_PERCENT;
const FEATURE_BASELINE = process.env.FEATURE_BASELINE === '1';
const PROFILE = process.env.PROFILE === '1';

const db = await benchDatabase();
const latencyDb = LATENCY_GROWING ? await benchDatabase() : undefined;
const children: ChildProcess[] = [];
try {
  const sts = await startAgentSts(db.url);
  children.push(sts.child);
  const stsLatency = latencyDb && LATENCY_GROWING ? await startAgentSts(latencyDb.url, { HEAP_GROWING_PERCENT: LATENCY_GROWING }) : undefined;
  if (stsLatency) children.push(stsLatency.child);
  /** A plain oidc-provider in a child process: the baseline, or with FEATURES=agent-sts the configured one. */
  const startProvider = async (env: Record<string, string> = {}) => {
    const port = await freePort();
    const child = await startChild('bench/baseline-provider.ts', { PORT: String(port), ...env });
    children.push(child);
    return { child, o: { url: `http://127.0.0.1:${port}/token`, auth: basicAuth('bench', 'bench-secret'), body: BODY, duration: DURATION, connections: CONNECTIONS } };
  };
  const baseline = await startProvider();
  const featured = FEATURE_BASELINE ? await startProvider({ FEATURES: 'agent-sts' }) : undefined;
  const registration = { id: 'spiffe://agent-sts.local/agents/bench', scopes: ['read'], audiences: ['https://api.example.com'] };
  const agent = await sts.register(registration);
  const ours = { url: `${sts.url}/token`, auth: agent.auth, body: BODY, duration: DURATION, connections: CONNECTIONS };
  const oursLatency = stsLatency ? { ...ours, url: `${stsLatency.url}/token`, auth: (await stsLatency.register(registration)).auth } : undefined;
  const base = baseline.o;
  type Run = { ours: Measured; base: Measured; featured?: Measured };
  type Key = keyof Run;
  /** The servers measured in every round, in their order; `short` names them in the profile's table. */
  const servers: { key: Key; name: string; short: string; o: LoadOptions; child: ChildProcess }[] = [
    { key: 'ours', name: 'agent-sts (records in Postgres)', short: 'agent-sts', o: ours, child: sts.child },
    { key: 'base', name: 'oidc-provider, in-memory', short: 'baseline', o: base, child: baseline.child },
    ...(featured ? [{ key: 'featured' as const, name: '  the same, agent-sts\'s features', short: 'featured', ...featured }] : []),
  ];

  await load(ours);
  if (oursLatency) await load(oursLatency);
  for (const { o } of servers.slice(1)) await load(o);
  const runs: Run[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const round: Partial<Run> = {};
    for (const { key, o, child } of servers) round[key] = await measured(o, child.pid!);
    runs.push(round as Run);
  }
  const ratios = runs.map((r) => r.ours.rps / r.base.rps).sort((a, b) => a - b);
  const oursPeak = median(runs.map((r) => r.ours.rps));
  const halfRate = Math.floor(oursPeak / 2);
  // Alternating rounds: a round's p99 rests on its few slowest tenths of a second.
  const half: LoadResult[] = [];
  const latencyHalf: LoadResult[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    half.push(await paced({ ...ours, duration: 2 * DURATION, connections: 64, rate: halfRate }));
    if (oursLatency) latencyHalf.push(await paced({ ...oursLatency, duration: 2 * DURATION, connections: 64, rate: halfRate }));
  }
  const baseHalf = await paced({ ...base, duration: 2 * DURATION, connections: 64, rate: halfRate });
  const burst = await load({ ...ours, rate: halfRate });

  console.log(`token endpoint, client credentials, ${CONNECTIONS} connections, ${ROUNDS} rounds x ${DURATION} s`);
  console.log('server                         | req/s min | median | max  | p99 ms (median)');
  const of = (r: (typeof runs)[number], key: Key) => r[key]!;
  for (const { name, key } of servers) {
    const rps = runs.map((r) => of(r, key).rps);
    console.log(`${name.padEnd(30)} | ${Math.min(...rps).toFixed(0).padStart(9)} | ${median(rps).toFixed(0).padStart(6)} | ${Math.max(...rps).toFixed(0).padStart(4)} | ${median(runs.map((r) => of(r, key).p99))}`);
  }
  console.log('CPU per request, µs (median)       | main thread | process | PostgreSQL');
  for (const { name, key } of servers) {
    const cpu = (k: keyof CpuPerRequest) => median(runs.map((r) => of(r, key).cpu[k])).toFixed(0);
    console.log(`${name.padEnd(34)} | ${cpu('main').padStart(11)} | ${cpu('process').padStart(7)} | ${cpu('postgres').padStart(10)}`);
  }
  console.log(`main-thread CPU per request, baseline / agent-sts: ${mmm(runs.map((r) => r.base.cpu.main / r.ours.cpu.main))}`);
  console.log(`throughput ratio agent-sts / baseline: min ${ratios[0]!.toFixed(2)}, median ${median(ratios).toFixed(2)}, max ${ratios.at(-1)!.toFixed(2)}`);
  if (featured) {
    console.log(`throughput ratio, the provider with agent-sts's features / baseline: ${mmm(runs.map((r) => r.featured!.rps / r.base.rps))}`);
    console.log(`throughput ratio, agent-sts / the provider with its features: ${mmm(runs.map((r) => r.ours.rps / r.featured!.rps))}`);
  }
  const p = (runs: LoadResult[], key: 'p50' | 'p99') => `${key} ms ${mmm(runs.map((x) => x[key]), 1)}`;
  console.log(`agent-sts at half its peak (${halfRate} req/s, evenly spaced, ${ROUNDS} rounds x ${2 * DURATION} s): ${p(half, 'p50')}; ${p(half, 'p99')}`);
  if (latencyHalf.length) console.log(`  agent-sts with HEAP_GROWING_PERCENT=${LATENCY_GROWING}, alternating with it: ${p(latencyHalf, 'p50')}; ${p(latencyHalf, 'p99')}`);
  console.log(`  oidc-provider, in-memory, at the same rate: p50 ${baseHalf.p50} ms, p99 ${baseHalf.p99} ms`);
  console.log(`  agent-sts at the same rate as autocannon's overallRate sends it (each second's budget at full speed): p50 ${burst.p50} ms, p99 ${burst.p99} ms`);
  if (PROFILE) {
    // The plain provider last: the table shows each server's difference from it.
    const profiled: [string, Map<string, number>][] = [];
    for (const { short, o, child } of [...servers.filter((x) => x.key !== 'base'), servers[1]!]) {
      const { measured: m, profile } = await profiledLoad(o, child);
      profiled.push([short, breakdown(profile, m.rps)]);
    }
    console.log(`\nprofiled round (${DURATION} s each; featured: the provider with agent-sts's features; sampling makes every figure larger):`);
    printBreakdowns(profiled);
  }
} finally {
  await stopChildren(children);
  await db.drop();
  await latencyDb?.drop();
}
