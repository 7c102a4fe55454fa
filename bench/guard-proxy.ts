/**
 * Latency the guard proxy adds: the same request sent straight to an upstream and through the guard with a
 * valid EdDSA access token, one at a time over keep-alive connections, in alternating rounds.
 * Run: npm run bench:guard
 */
import { createServer, Agent, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createGuardProxy, listenGuard } from '../src/guard/guard-proxy.js';
import { DEFAULT_POLICY } from '../src/guard/scope-policy.js';
import { Verifier } from '../src/verifier/index.js';
import { createLogger } from '../src/log/logger.js';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const N = Number(process.env.N ?? 2000);

const listen = async (server: ReturnType<typeof createServer>) => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
};

// A stand-in authorization server: metadata and JWKS only.
const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'EdDSA', use: 'sig' };
let issuer = '';
const as = createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(req.url === '/jwks' ? { keys: [jwk] } : { issuer, jwks_uri: `${issuer}/jwks` }));
});
issuer = await listen(as);
const upstream = createServer((_req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end('{"ok":true}');
});
const upstreamUrl = await listen(upstream);
const resource = 'https://api.example.com';
const guard = createGuardProxy({ upstream: upstreamUrl, verifier: new Verifier({ issuer, audience: resource }), resource, issuer, policy: DEFAULT_POLICY, logger: createLogger('silent') });
const guardUrl = `http://127.0.0.1:${await listenGuard(guard, 0)}`;
const now = Math.floor(Date.now() / 1000);
const token = await new SignJWT({ iss: issuer, sub: 'spiffe://agent-sts.local/agents/a', client_id: 'spiffe://agent-sts.local/agents/a', aud: resource, scope: 'read', jti: 'j', iat: now, exp: now + 3600 })
  .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'k1' }).sign(privateKey);

const agent = new Agent({ keepAlive: true, maxSockets: 1 });
const get = (url: string) => new Promise<number>((resolve, reject) => {
  const start = process.hrtime.bigint();
  request(url, { agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
    res.resume();
    res.on('end', () => (res.statusCode === 200 ? resolve(Number(process.hrtime.bigint() - start) / 1e6) : reject(new Error(`HTTP ${res.statusCode}`))));
  }).on('error', reject).end();
});
const run = async (url: string) => {
  const times: number[] = [];
  for (let i = 0; i < N; i++) times.push(await get(url));
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(N / 2)]!, p99: times[Math.floor(N * 0.99)]! };
};

await run(`${upstreamUrl}/x`);
await run(`${guardUrl}/x`);
const direct: number[] = [];
const guarded: number[] = [];
const added: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  const d = await run(`${upstreamUrl}/x`);
  const g = await run(`${guardUrl}/x`);
  direct.push(d.p50);
  guarded.push(g.p50);
  added.push(g.p50 - d.p50);
}
for (const s of [as, upstream, guard]) s.close();
agent.destroy();
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `${s[0]!.toFixed(3)} / ${s[Math.floor(s.length / 2)]!.toFixed(3)} / ${s.at(-1)!.toFixed(3)}`;
};
console.log(`guard proxy, ${ROUNDS} rounds x ${N} sequential GETs with a bearer token (ms, min / median / max of the round p50s)`);
console.log(`direct to upstream   ${stats(direct)}`);
console.log(`through the guard    ${stats(guarded)}`);
console.log(`added by the guard   ${stats(added)}`);
