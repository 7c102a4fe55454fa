/**
 * Memory under Biscuit load: agent-sts (on PostgreSQL, in its own process, compiled and run under node as
 * `npm start` runs it; see bench/memory.ts) introspecting one Biscuit over and over (16 connections, autocannon
 * in this process), its resident set sampled over IPC and reported as the maximum of every 15 s. Each
 * introspection parses the chain in the Biscuit WebAssembly module, whose memory only grows (see
 * BISCUIT_INSTANCE_MAX_BYTES): the set must stay flat. Needs PostgreSQL (DATABASE_URL, default
 * postgres://postgres@127.0.0.1:5432/test). Run: npm run bench:biscuit-memory (SECONDS_TOTAL, default 90)
 */
import { exportJWK, generateKeyPair } from 'jose';
import { TOKEN_EXCHANGE_GRANT } from '../src/identity/agent-registration.js';
import { ACCESS_TOKEN_TYPE } from '../src/tokens/access-token.js';
import { BISCUIT_TOKEN_TYPE } from '../src/tokens/biscuit-blocks.js';
import { benchDatabase, mmm, sampledLoad, startAgentSts, stopChildren } from './support.js';

const TOOL = 'https://tools.example/mcp';
const WINDOW_SECONDS = 15;
const db = await benchDatabase();
const sts = await startAgentSts(db.url, {}, 'dist/bench/agent-sts-server.js');
try {
  const { publicKey } = await generateKeyPair('EdDSA', { extractable: true, crv: 'Ed25519' });
  const pub = { ...(await exportJWK(publicKey)), alg: 'EdDSA' };
  const frontend = await sts.register({ id: 'spiffe://agent-sts.local/agents/frontend', scopes: ['search', 'read'], audiences: [TOOL] });
  const orch = await sts.register({
    id: 'spiffe://agent-sts.local/agents/orch', grant_types: ['client_credentials', TOKEN_EXCHANGE_GRANT], scopes: ['search', 'read'], audiences: [TOOL],
    jwks: { keys: [pub] }, token_exchange: { may_act_for_others: true, max_budget: 5000 },
  });
  const tool = await sts.register({ id: 'spiffe://agent-sts.local/agents/tool', scopes: ['read'], audiences: [TOOL] });
  const post = async (path: string, auth: string, form: Record<string, string>) => (await fetch(`${sts.url}${path}`, {
    method: 'POST', headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form),
  })).json() as Promise<Record<string, unknown>>;
  const user = (await post('/token', frontend.auth, { grant_type: 'client_credentials' })).access_token as string;
  const biscuit = (await post('/token', orch.auth, {
    grant_type: TOKEN_EXCHANGE_GRANT, subject_token: user, subject_token_type: ACCESS_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 'search read',
  })).access_token as string;
  if ((await post('/token/introspection', tool.auth, { token: biscuit })).active !== true) throw new Error('the Biscuit does not introspect as active');

  const mb = (bytes: number) => bytes / 2 ** 20;
  const maxima: number[] = [];
  console.log(`Biscuit introspection, 16 connections, resident set (max of every ${WINDOW_SECONDS} s)`);
  for (let t = 0; t < Number(process.env.SECONDS_TOTAL ?? 90); t += WINDOW_SECONDS) {
    const { result, samples } = await sampledLoad(sts.child, {
      url: `${sts.url}/token/introspection`, auth: tool.auth, body: new URLSearchParams({ token: biscuit }).toString(), duration: WINDOW_SECONDS, connections: 16,
    });
    maxima.push(mb(Math.max(...samples.map((s) => s.rss))));
    console.log(`t=${String(t + WINDOW_SECONDS).padStart(4)} s | ${result.rps.toFixed(0).padStart(5)} introspections/s | RSS max ${maxima.at(-1)!.toFixed(1)} MB`);
  }
  const half = maxima.slice(Math.floor(maxima.length / 2));
  console.log(`RSS maxima ${mmm(maxima, 1)} MB; second half against the first window: ${(((Math.max(...half) - maxima[0]!) / maxima[0]!) * 100).toFixed(1)} % at most`);
} finally {
  await stopChildren([sts.child]);
  await db.drop();
}
