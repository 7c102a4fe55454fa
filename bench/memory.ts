/**
 * Server memory under the token-endpoint load (client credentials, as bench/token-endpoint.ts): the resident set
 * of the server process, sampled over IPC every 500 ms. The servers run compiled (`tsc -p tsconfig.bench.json`,
 * which the npm scripts run first) under node, as `npm start` runs agent-sts: tsx would add its own
 * transpiled sources and source maps, over 100 MB, to the figure.
 *
 * `npm run bench:memory`: agent-sts on PostgreSQL and, as the baseline, the plain oidc-provider with its
 * in-memory adapter, loaded in alternating rounds; the goal is agent-sts's RSS at most 200 MB.
 * `npm run bench:soak` (`--soak`): agent-sts alone under continuous load for SOAK_MINUTES (default 10) after
 * WARMUP_SECONDS (default 30); the goal is the last minute's median RSS within ±10 % of the first minute's.
 * Needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test).
 */
import type { ChildProcess } from 'node:child_process';
import type { MemorySample } from './child-ready.js';
import {
  basicAuth, benchDatabase, freePort, load, median, mmm, MEMORY_INTERVAL_MS as INTERVAL_MS, sampledLoad, sampleMemory, startAgentSts, startChild, stopChildren, type LoadOptions,
} from './support.js';

const SOAK = process.argv.includes('--soak');
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DURATION = Number(process.env.DURATION ?? 10);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 16);
const SOAK_MINUTES = Number(process.env.SOAK_MINUTES ?? 10);
const WARMUP_SECONDS = Number(process.env.WARMUP_SECONDS ?? 30);
const RSS_GOAL_MB = 200;
const DRIFT_GOAL = 0.1;
const BODY = 'grant_type=client_credentials';

const mb = (bytes: number) => bytes / 2 ** 20;

const line = (name: string, xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  const p90 = sorted[Math.floor(sorted.length * 0.9)]!;
  return `${name.padEnd(26)} | ${mb(sorted[0]!).toFixed(1).padStart(6)} | ${mb(median(sorted)).toFixed(1).padStart(6)} | ${mb(p90).toFixed(1).padStart(6)} | ${mb(sorted.at(-1)!).toFixed(1).padStart(6)} | ${String(xs.length).padStart(7)}`;
};

const db = await benchDatabase();
const children: ChildProcess[] = [];
try {
  const sts = await startAgentSts(db.url, {}, 'dist/bench/agent-sts-server.js');
  children.push(sts.child);
  const agent = await sts.register({ id: 'spiffe://agent-sts.local/agents/bench', scopes: ['read'], audiences: ['https://api.example.com'] });
  const ours: LoadOptions = { url: `${sts.url}/token`, auth: agent.auth, body: BODY, duration: DURATION, connections: CONNECTIONS };
  const idle = async (child: ChildProcess) => {
    const stop = sampleMemory(child);
    await new Promise((r) => setTimeout(r, 2000));
    return (await stop()).map((s) => s.rss);
  };

  if (SOAK) {
    const idleRss = await idle(sts.child);
    await load({ ...ours, duration: WARMUP_SECONDS });
    const { result, samples } = await sampledLoad(sts.child, { ...ours, duration: SOAK_MINUTES * 60 });
    const minutes = Array.from({ length: SOAK_MINUTES }, (_, m) => samples.filter((s) => s.at >= m * 60_000 && s.at < (m + 1) * 60_000));
    const medians = minutes.map((ss) => median(ss.map((s) => s.rss)));
    const heap = minutes.map((ss) => median(ss.map((s) => s.heapUsed)));
    const first = medians[0]!;
    const last = medians.at(-1)!;
    const drift = (last - first) / first;
    console.log(`soak: agent-sts on PostgreSQL, client credentials, ${CONNECTIONS} connections, ${WARMUP_SECONDS} s warm-up then ${SOAK_MINUTES} min; RSS every ${INTERVAL_MS} ms`);
    console.log(`idle before load: RSS ${mb(median(idleRss)).toFixed(1)} MB; under load ${result.rps.toFixed(0)} req/s, ${result.requests} tokens, p99 ${result.p99} ms`);
    console.log('minute | RSS median MB | heap used median MB | samples');
    minutes.forEach((ss, m) => console.log(`${String(m + 1).padStart(6)} | ${mb(medians[m]!).toFixed(1).padStart(13)} | ${mb(heap[m]!).toFixed(1).padStart(19)} | ${String(ss.length).padStart(7)}`));
    console.log(`RSS max ${mb(Math.max(...samples.map((s) => s.rss))).toFixed(1)} MB; first-minute median ${mb(first).toFixed(1)} MB, last-minute median ${mb(last).toFixed(1)} MB, drift ${(drift * 100).toFixed(1)} % (goal within ±${DRIFT_GOAL * 100} %: ${Math.abs(drift) <= DRIFT_GOAL ? 'met' : 'missed'})`);
  } else {
    const basePort = await freePort();
    const baseChild = await startChild('dist/bench/baseline-provider.js', { PORT: String(basePort) });
    children.push(baseChild);
    const base: LoadOptions = { url: `http://127.0.0.1:${basePort}/token`, auth: basicAuth('bench', 'bench-secret'), body: BODY, duration: DURATION, connections: CONNECTIONS };
    const idleOurs = await idle(sts.child);
    const idleBase = await idle(baseChild);
    const rounds: { ours: number[]; base: number[]; oursRps: number; baseRps: number; oursHeap: MemorySample[] }[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const o = await sampledLoad(sts.child, ours);
      const b = await sampledLoad(baseChild, base);
      rounds.push({ ours: o.samples.map((s) => s.rss), base: b.samples.map((s) => s.rss), oursRps: o.result.rps, baseRps: b.result.rps, oursHeap: o.samples });
    }
    const maxOf = (key: 'ours' | 'base') => rounds.map((r) => Math.max(...r[key]));
    const oursMax = Math.max(...maxOf('ours'));
    console.log(`server memory under the token-endpoint load (client credentials), ${CONNECTIONS} connections, ${ROUNDS} alternating rounds x ${DURATION} s; RSS every ${INTERVAL_MS} ms`);
    console.log('server, RSS MB             |    min | median |    p90 |    max | samples');
    console.log(line('agent-sts, idle', idleOurs));
    console.log(line('agent-sts, under load', rounds.flatMap((r) => r.ours)));
    console.log(line('oidc-provider, idle', idleBase));
    console.log(line('oidc-provider, under load', rounds.flatMap((r) => r.base)));
    console.log(`max RSS per round, agent-sts: ${maxOf('ours').map((x) => mb(x).toFixed(1)).join(', ')} MB at ${rounds.map((r) => r.oursRps.toFixed(0)).join(', ')} req/s; oidc-provider: ${maxOf('base').map((x) => mb(x).toFixed(1)).join(', ')} MB at ${rounds.map((r) => r.baseRps.toFixed(0)).join(', ')} req/s`);
    const heap = rounds.flatMap((r) => r.oursHeap);
    console.log(`agent-sts V8 heap under load: total max ${mb(Math.max(...heap.map((s) => s.heapTotal))).toFixed(1)} MB, used max ${mb(Math.max(...heap.map((s) => s.heapUsed))).toFixed(1)} MB`);
    const ratios = rounds.map((r) => Math.max(...r.ours) / Math.max(...r.base));
    console.log(`max RSS agent-sts / oidc-provider per round: ${mmm(ratios)}`);
    console.log(`agent-sts max RSS ${mb(oursMax).toFixed(1)} MB (goal <= ${RSS_GOAL_MB} MB: ${mb(oursMax) <= RSS_GOAL_MB ? 'met' : 'missed'})`);
  }
} finally {
  await stopChildren(children);
  await db.drop();
}
