/**
 * Token exchange throughput (RFC 8693 on /token): an orchestrator agent exchanging another agent's access
 * token into a delegated access token (`act` chain, narrowed scope and audience) and into a Transaction Token,
 * against the same agent's client-credentials throughput as the baseline, on the same server in the same run:
 * agent-sts in a child process on PostgreSQL, load from autocannon in this one, in alternating rounds.
 * The subject tokens are a pool of access tokens minted for the load, picked in turn. Each Txn-Token exchanged
 * from an access token starts its own transaction, so MAX_TXN_TOKENS_PER_TXN does not refuse any of them.
 * Needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test). Run: npm run bench:exchange
 */
import type { ChildProcess } from 'node:child_process';
import { TOKEN_EXCHANGE_GRANT as TOKEN_EXCHANGE } from '../src/identity/agent-registration.js';
import { ACCESS_TOKEN_TYPE as AT } from '../src/tokens/access-token.js';
import { TXN_TOKEN_TYPE as TXN } from '../src/tokens/txn-token.js';
import { benchDatabase, load, measured, median, mmm, startAgentSts, stopChildren, type Measured } from './support.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DURATION = Number(process.env.DURATION ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 16);
const POOL = Number(process.env.POOL ?? 256);
const GOAL = 0.8;

const TRUST_DOMAIN = 'agent-sts.local';
const ORCH_API = 'https://orchestrator.example/api';
const SPEC_API = 'https://specialist.example/api';

const db = await benchDatabase();
const children: ChildProcess[] = [];
try {
  const sts = await startAgentSts(db.url, { TRUST_DOMAIN });
  children.push(sts.child);
  const frontend = await sts.register({ id: `spiffe://${TRUST_DOMAIN}/agents/frontend`, scopes: ['orders:read', 'orders:write', 'tools:search'], audiences: [ORCH_API] });
  const orchestrator = await sts.register({
    id: `spiffe://${TRUST_DOMAIN}/agents/orchestrator`, grant_types: ['client_credentials', TOKEN_EXCHANGE],
    scopes: ['orders:read', 'tools:search'], audiences: [SPEC_API], token_exchange: { may_act_for_others: true },
  });
  const tokenUrl = `${sts.url}/token`;

  // Fresh subject tokens for every load, so none expires during a long run.
  const subjectPool = async () => {
    const pool: string[] = [];
    while (pool.length < POOL) {
      pool.push(...await Promise.all(Array.from({ length: Math.min(16, POOL - pool.length) }, async () => {
        const res = await fetch(tokenUrl, { method: 'POST', headers: { authorization: frontend.auth, 'content-type': 'application/x-www-form-urlencoded' }, body: 'grant_type=client_credentials' });
        if (!res.ok) throw new Error(`subject token: HTTP ${res.status} ${await res.text()}`);
        return ((await res.json()) as { access_token: string }).access_token;
      })));
    }
    let next = 0;
    return () => pool[next++ % pool.length]!;
  };
  const exchangeBody = (extra: Record<string, string>) => (subject: string) => new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: AT, ...extra }).toString();
  const kinds = {
    cc: { name: 'client credentials (baseline)', body: async () => 'grant_type=client_credentials', issued: undefined },
    delegated: {
      name: 'exchange -> delegated access token', issued: AT,
      body: async () => { const pick = await subjectPool(); const form = exchangeBody({ resource: SPEC_API, scope: 'orders:read' }); return () => form(pick()); },
    },
    txn: {
      name: 'exchange -> Txn-Token', issued: TXN,
      body: async () => {
        const pick = await subjectPool();
        const form = exchangeBody({ requested_token_type: TXN, audience: TRUST_DOMAIN, scope: 'orders:read', request_details: JSON.stringify({ tool: 'search', query: 'open orders' }) });
        return () => form(pick());
      },
    },
  } as const;
  type Kind = keyof typeof kinds;
  // KINDS=delegated measures only that kind (for profiling it); the client-credentials baseline is always measured.
  const order = ['cc', ...(process.env.KINDS ?? 'delegated,txn').split(',').filter((k) => k === 'delegated' || k === 'txn')] as Kind[];

  // Each kind answers with the token it is meant to, before any load.
  for (const kind of order) {
    const body = await kinds[kind].body();
    const res = await fetch(tokenUrl, { method: 'POST', headers: { authorization: orchestrator.auth, 'content-type': 'application/x-www-form-urlencoded' }, body: typeof body === 'string' ? body : body() });
    const json = (await res.json()) as { issued_token_type?: string };
    if (res.status !== 200 || json.issued_token_type !== kinds[kind].issued) throw new Error(`${kinds[kind].name}: HTTP ${res.status} ${JSON.stringify(json)}`);
  }

  const options = async (kind: Kind) => ({ url: tokenUrl, auth: orchestrator.auth, body: await kinds[kind].body(), duration: DURATION, connections: CONNECTIONS });
  const run = async (kind: Kind) => measured(await options(kind), sts.child.pid!);
  for (const kind of order) await load(await options(kind));
  const runs: Record<Kind, Measured>[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const round: Partial<Record<Kind, Measured>> = {};
    for (const kind of order) round[kind] = await run(kind);
    runs.push(round as Record<Kind, Measured>);
  }

  console.log(`token exchange on /token, one orchestrator agent, ${CONNECTIONS} connections, ${POOL} subject tokens, ${ROUNDS} rounds x ${DURATION} s`);
  console.log('request                             | req/s min | median | max  | p99 ms (median) | / client credentials (median)');
  for (const kind of order) {
    const rps = runs.map((r) => r[kind].rps);
    const ratio = median(runs.map((r) => r[kind].rps / r.cc.rps));
    console.log(`${kinds[kind].name.padEnd(35)} | ${Math.min(...rps).toFixed(0).padStart(9)} | ${median(rps).toFixed(0).padStart(6)} | ${Math.max(...rps).toFixed(0).padStart(4)} | ${String(median(runs.map((r) => r[kind].p99))).padStart(15)} | ${ratio.toFixed(2)}x`);
  }
  console.log('CPU per request, µs (median)       | main thread | process | PostgreSQL');
  for (const kind of order) {
    const cpu = (k: 'main' | 'process' | 'postgres') => median(runs.map((r) => r[kind].cpu[k])).toFixed(0);
    console.log(`${kinds[kind].name.padEnd(34)} | ${cpu('main').padStart(11)} | ${cpu('process').padStart(7)} | ${cpu('postgres').padStart(10)}`);
  }
  for (const kind of order.filter((k) => k !== 'cc')) {
    const ratios = runs.map((r) => r[kind].rps / r.cc.rps);
    console.log(`${kinds[kind].name} / client credentials: ${mmm(ratios)} (goal >= ${GOAL}: ${median(ratios) >= GOAL ? 'met' : 'missed'})`);
  }
} finally {
  await stopChildren(children);
  await db.drop();
}
