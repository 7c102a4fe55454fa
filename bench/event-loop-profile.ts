/**
 * Where a server's main thread spends its time per request, by kind of work: the inspector's sampling profile
 * of a child server (started and stopped over IPC, see child-ready.ts) taken while a load runs, each sample
 * charged by its innermost function (or, for signing, any function on its stack) to a category, and scaled so
 * that all categories together, idle included, are the wall time per request. Sampling slows the server
 * somewhat, so the figures are larger than unprofiled ones; compare servers profiled the same way.
 */
import type { ChildProcess } from 'node:child_process';
import { measured, type LoadOptions, type Measured } from './support.js';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string }; children?: number[] }
export interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

function ask(child: ChildProcess, command: string, answer: 'profiling' | 'profile'): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown) => {
      const message = m as Record<string, unknown> | undefined;
      if (message?.profileError) reject(new Error(String(message.profileError)));
      else if (message?.[answer] === undefined) return;
      else resolve(message[answer]);
      child.off('message', onMessage);
    };
    child.on('message', onMessage);
    child.send(command);
  });
}

/** A measured load (see `measured`) with the child's main thread profiled while it ran. */
export async function profiledLoad(o: LoadOptions, child: ChildProcess): Promise<{ measured: Measured; profile: CpuProfile }> {
  await ask(child, 'profile-start', 'profiling');
  const result = await measured(o, child.pid!);
  const profile = (await ask(child, 'profile-stop', 'profile')) as CpuProfile;
  return { measured: result, profile };
}

const KOA = /node_modules\/(koa|koa-compose|@koa\/router|delegates|type-is|vary|on-finished|statuses|accepts|negotiator|only|fresh|http-errors|depd|encodeurl|escape-html|parseurl|destroy|ee-first|cache-content-type|media-typer|mime-types|mime-db|content-disposition|content-type|cookies|keygrip)\//;
const DATABASE = /node_modules\/(pg|pg-[a-z-]+|knex|postgres-[a-z-]+|tarn|pgpass|split2|buffer-writer|packet-reader)\//;
/**
 * Signing a JWT: oidc-provider's JWT `sign` (the encoding, and agent-sts's external signing key), jose's signing
 * functions, WebCrypto's `sign` and the completion of its job (the plain provider's signature is handed to the
 * thread pool after an `await`, so on stacks of its own), and agent-sts's compact-JWS signer for the tokens it
 * mints itself.
 */
const signs = ({ functionName: f, url }: ProfileNode['callFrame']) => f === 'signJwsInput'
  || (f === 'sign' && url.endsWith('oidc-provider/lib/helpers/jwt.js'))
  || (/sign/i.test(f) && url.includes('node_modules/jose/'))
  || (/^(sign|signVerify)$/.test(f) && url === 'node:internal/crypto/webcrypto')
  || (/^(jobPromise|onDone)$/.test(f) && url === 'node:internal/crypto/util');

function category(frame: ProfileNode['callFrame'], signing: boolean): string {
  const { functionName: f, url } = frame;
  if (f === '(idle)') return 'idle (waiting for I/O)';
  if (f === '(garbage collector)') return 'garbage collection';
  if (signing) return 'signing (the signature and its encoding)';
  if (f === 'writev' || f === 'writeBuffer' || f === 'writeUtf8String' || url === 'node:internal/stream_base_commons') return 'socket writes';
  if (f === 'runMicrotasks' || f === 'executionAsyncResource' || /^node:(internal\/)?async_hooks$|^node:internal\/process\/task_queues$/.test(url)) return 'promises, async hooks, microtasks';
  if (url.includes('node_modules/oidc-provider/')) return 'oidc-provider';
  if (KOA.test(url)) return 'koa';
  if (DATABASE.test(url)) return 'pg, knex, pool';
  if (url.includes('node_modules/jose/')) return 'jose (besides signing)';
  const ours = /\/src\/([^/]+)\//.exec(url);
  if (ours && !url.includes('node_modules')) return `agent-sts: src/${ours[1]}`;
  if (/^node:(_http|net|internal\/streams|events|buffer|internal\/buffer|querystring|url|internal\/url)/.test(url)) return 'node: HTTP, streams, buffers';
  if (url.startsWith('node:') || url === '') return 'node and V8, other';
  return 'other packages';
}

/** µs of the main thread's wall time per request, by category, from a profile taken at `rps` requests per second. */
export function breakdown(profile: CpuProfile, rps: number): Map<string, number> {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, ProfileNode>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const selfTime = new Map<number, number>();
  profile.samples.forEach((id, i) => selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const signing = (id: number) => {
    for (let n = byId.get(id); n; n = parent.get(n.id)) if (signs(n.callFrame)) return true;
    return false;
  };
  const totals = new Map<string, number>();
  let all = 0;
  for (const [id, t] of selfTime) {
    const c = category(byId.get(id)!.callFrame, signing(id));
    totals.set(c, (totals.get(c) ?? 0) + t);
    all += t;
  }
  const scale = 1e6 / rps / all;
  return new Map([...totals].map(([c, t]) => [c, t * scale]));
}

/** Prints breakdowns side by side (µs per request), largest first, with each one's difference from the last. */
export function printBreakdowns(servers: [name: string, breakdown: Map<string, number>][]): void {
  const base = servers.at(-1)![1];
  const categories = [...new Set(servers.flatMap(([, b]) => [...b.keys()]))]
    .sort((a, b) => (servers[0]![1].get(b) ?? 0) - (servers[0]![1].get(a) ?? 0));
  const width = Math.max(...categories.map((c) => c.length), 8);
  const diffs = servers.slice(0, -1).map(([name]) => `${name} − ${servers.at(-1)![0]}`);
  console.log(`${'main thread, µs per request'.padEnd(width)} | ${[...servers.map(([n]) => n), ...diffs].join(' | ')}`);
  const cell = (v: number, name: string) => v.toFixed(1).padStart(name.length);
  for (const c of [...categories, 'total']) {
    const value = (b: Map<string, number>) => (c === 'total' ? [...b.values()].reduce((x, y) => x + y, 0) : b.get(c) ?? 0);
    const cells = servers.map(([n, b]) => cell(value(b), n));
    const deltas = servers.slice(0, -1).map(([, b], i) => cell(value(b) - value(base), diffs[i]!));
    console.log(`${c.padEnd(width)} | ${[...cells, ...deltas].join(' | ')}`);
  }
}
