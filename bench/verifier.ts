/**
 * Access-token verification: the verifier library against the floor (node:crypto verifying the same
 * signature, nothing else) and jose.jwtVerify, interleaved in rounds on the same machine.
 * Run: npm run bench:verifier
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { Verifier } from '../src/verifier/index.js';

const ROUNDS = Number(process.env.ROUNDS ?? 7);
const N = Number(process.env.N ?? 20_000);

const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true });
const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'EdDSA', use: 'sig' };
const server = createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(req.url === '/jwks' ? { keys: [jwk] } : { issuer, jwks_uri: `${issuer}/jwks` }));
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
const audience = 'https://api.example.com';
const now = Math.floor(Date.now() / 1000);
const token = await new SignJWT({ iss: issuer, sub: 'spiffe://agent-sts.local/agents/a', client_id: 'spiffe://agent-sts.local/agents/a', aud: audience, scope: 'tools:read', jti: 'x'.repeat(43), iat: now, exp: now + 3600 })
  .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'k1' }).sign(privateKey);

const verifier = new Verifier({ issuer, audience });
await verifier.verifyAccessToken({ authorization: `Bearer ${token}`, method: 'GET', url: audience });
const [h, p, s] = token.split('.') as [string, string, string];
const data = Buffer.from(`${h}.${p}`);
const sig = Buffer.from(s, 'base64url');
const keyObject = publicKey as unknown as KeyObject;

async function time(fn: () => unknown | Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await fn();
  return Number(process.hrtime.bigint() - start) / N;
}

const methods: Record<string, () => unknown> = {
  floor: () => cryptoVerify(null, data, keyObject, sig),
  library: () => verifier.verifyAccessToken({ authorization: `Bearer ${token}`, method: 'GET', url: audience }),
  jose: () => jwtVerify(token, keyObject, { issuer, audience, typ: 'at+jwt' }),
};
const results: Record<string, number[]> = { floor: [], library: [], jose: [] };
for (const fn of Object.values(methods)) await time(fn);
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, fn] of Object.entries(methods)) results[name]!.push(await time(fn));
}
server.close();

const stats = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return { min: sorted[0]!, median: sorted[Math.floor(sorted.length / 2)]!, max: sorted.at(-1)! };
};
const floor = stats(results.floor!).median;
console.log(`access-token verification, EdDSA, ${ROUNDS} rounds x ${N} (µs per verification; ratio = median / floor median)`);
console.log('method   | min    | median | max    | ratio');
for (const [name, xs] of Object.entries(results)) {
  const st = stats(xs);
  console.log(`${name.padEnd(8)} | ${(st.min / 1000).toFixed(1).padStart(6)} | ${(st.median / 1000).toFixed(1).padStart(6)} | ${(st.max / 1000).toFixed(1).padStart(6)} | ${(st.median / floor).toFixed(2)}x`);
}
