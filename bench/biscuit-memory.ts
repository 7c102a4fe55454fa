/**
 * Memory under Biscuit load: agent-sts (on PostgreSQL, in its own process) introspecting one Biscuit over and over
 * (16 connections, autocannon in this process), its resident set read every 15 s. Each introspection parses the
 * chain in the Biscuit WebAssembly module, whose memory only grows (see BISCUIT_INSTANCE_MAX_BYTES): the set must
 * stay flat. Needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test).
 * Run: npm run bench:biscuit-memory (SECONDS_TOTAL, default 90)
 */
import { readFileSync } from 'node:fs';
import { exportJWK, generateKeyPair } from 'jose';
import { benchDatabase, load, mmm, startAgentSts, stopChildren } from './support.js';
const TOOL = 'https://tools.example/mcp';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const db = await benchDatabase();
const sts = await startAgentSts(db.url);
try {
  const { publicKey } = await generateKeyPair('EdDSA', { extractable: true, crv: 'Ed25519' });
  const pub = { ...(await exportJWK(publicKey)), alg: 'EdDSA' };
  const frontend = await sts.register({ id: 'spiffe://agent-sts.local/agents/frontend', scopes: ['search', 'read'], audiences: [TOOL] });
  const orch = await sts.register({ id: 'spiffe://agent-sts.local/agents/orch', grant_types: ['client_credentials', TX], scopes: ['search', 'read'], audiences: [TOOL], jwks: { keys: [pub] }, token_exchange: { may_act_for_others: true, max_budget: 5000 } });
  const tool = await sts.register({ id: 'spiffe://agent-sts.local/agents/tool', scopes: ['read'], audiences: [TOOL] });
  const post = async (auth: string, form: Record<string, string>) => (await fetch(`${sts.url}/token${form.token ? '/introspection' : ''}`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form) })).json() as Promise<Record<string, unknown>>;
  const user = (await post(frontend.auth, { grant_type: 'client_credentials' })).access_token as string;
  const biscuit = (await post(orch.auth, { grant_type: TX, subject_token: user, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token', requested_token_type: 'urn:agent-sts:params:oauth:token-type:biscuit', scope: 'search read' })).access_token as string;
  if ((await post(tool.auth, { token: biscuit })).active !== true) throw new Error('the Biscuit does not introspect as active');
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${sts.child.pid}/status`, 'utf8'))![1]) / 1024;
  const samples: number[] = [];
  console.log('Biscuit introspection, 16 connections, resident set every 15 s');
  for (let t = 0; t < Number(process.env.SECONDS_TOTAL ?? 90); t += 15) {
    const r = await load({ url: `${sts.url}/token/introspection`, auth: tool.auth, body: new URLSearchParams({ token: biscuit }).toString(), duration: 15, connections: 16 });
    samples.push(rss());
    console.log(`t=${String(t + 15).padStart(4)} s | ${r.rps.toFixed(0).padStart(5)} introspections/s | RSS ${samples.at(-1)!.toFixed(1)} MB`);
  }
  const half = samples.slice(Math.floor(samples.length / 2));
  console.log(`RSS ${mmm(samples, 1)} MB; second half against the first sample: ${(((Math.max(...half) - samples[0]!) / samples[0]!) * 100).toFixed(1)} % at most`);
} finally {
  await stopChildren([sts.child]);
  await db.drop();
}
