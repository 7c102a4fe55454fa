/**
 * Biscuit chains: mint, append a delegation offline (signed by the delegator), and verify, at depths 0 to 5;
 * p50/p99 and sizes. The baseline, measured in the same run on the same tokens: the plain library parsing the
 * token and running its checks with `allow if true` (signatures and Datalog, none of agent-sts's chain rules).
 * The floor: the token's Ed25519 signatures (one for the authority block, two for each delegation: the block's
 * and the delegator's) each verified once by node:crypto, natively, measured in the same run.
 * Every operation takes the current WebAssembly instance, as agent-sts does (see BISCUIT_INSTANCE_MAX_BYTES).
 * Then the bytes one delegation adds, as agent-sts writes it and with the same hop said in fewer bytes, to show
 * where the growth per hop goes.
 * Run: npm run bench:biscuit
 */
import type { JWK } from 'jose';
import { exportJWK, generateKeyPair } from 'jose';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { loadBiscuit, datalogParams } from '../src/tokens/biscuit-wasm.js';
import { biscuitKeyText, biscuitPublicKey, biscuitRootKeys } from '../src/tokens/biscuit-keys.js';
import { hopBlock, keyBytes } from '../src/tokens/biscuit-blocks.js';
import { parseBiscuit } from '../src/tokens/biscuit-chain.js';
import { appendThirdPartyBlock, mintBiscuit } from '../src/tokens/biscuit-token.js';
import { delegate, verifyBiscuit } from '../src/tokens/biscuit.js';

const N = Number(process.env.N ?? 400);
const ROUNDS = Number(process.env.ROUNDS ?? 5);

const jwk = async (): Promise<JWK> => exportJWK((await generateKeyPair('EdDSA', { extractable: true, crv: 'Ed25519' })).privateKey);
const root = await jwk();
const jwks = { keys: [{ ...root, d: undefined, kid: 'biscuit-1', alg: 'EdDSA' }] as JWK[] };
const rootKeys = biscuitRootKeys(jwks);
const keys = await Promise.all(Array.from({ length: 6 }, jwk));
const pub = ({ d: _d, ...k }: JWK) => k;
const id = (i: number) => `spiffe://agent-sts.local/agents/agent-${i}`;
const TOOLS = 'https://tools.example/mcp';
const exp = new Date((Math.floor(Date.now() / 1000) + 3600) * 1000);

const mint = async () => mintBiscuit(await loadBiscuit(), {
  issuer: 'https://sts.example', subject: 'spiffe://agent-sts.local/users/alice', tokenId: '6f1c0b9e-6a0e-4c56-9b7e-0a3f1c2d4e5f', txn: '2b1f7c1e-9d3a-4e0b-8c6f-1a2b3c4d5e6f',
  holder: id(0), holderKey: biscuitKeyText(keys[0]!), rights: ['search', 'read', 'write', 'pay'], audiences: [TOOLS], budget: 10_000, maxDepth: 5, expires: exp,
}, { privateJwk: root, rootKeyId: 1 }).token;
const hop = (token: string, i: number) => delegate(token, { delegate: id(i + 1), delegateKey: pub(keys[i + 1]!), context: `step ${i + 1}: narrow and hand on`, tools: ['search', 'read'], budget: 5000 - i * 500 }, keys[i]!, jwks);

const chains: string[] = [await mint()];
for (let i = 0; i < 5; i++) chains.push(await hop(chains[i]!, i));
const request = { tools: ['read'], resource: TOOLS, spend: 100 };
const baseline = async (token: string) => {
  const b = await loadBiscuit();
  const key = biscuitPublicKey(b, biscuitKeyText(root));
  const parsed = b.Biscuit.fromBase64(token, key);
  key.free();
  const builder = new b.AuthorizerBuilder();
  builder.addCodeWithParameters('time({now}); tool({tool}); resource({resource}); spend({spend}); allow if true', datalogParams({ now: new Date(), tool: 'read', resource: TOOLS, spend: 100 }), {});
  const authorizer = builder.buildAuthenticated(parsed);
  authorizer.authorizeWithLimits({ max_facts: 1000, max_iterations: 100, max_time_micro: 100_000 });
  authorizer.free();
  parsed.free();
};

async function sample(fn: () => unknown): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < N; i++) {
    const t = process.hrtime.bigint();
    await fn();
    out.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return out.sort((a, c) => a - c);
}
const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const median = (xs: number[]) => [...xs].sort((a, c) => a - c)[Math.floor(xs.length / 2)]!;

// One native Ed25519 verification of a block-sized message.
const native = generateKeyPairSync('ed25519');
const message = Buffer.alloc(400, 7);
const signature = sign(null, message, native.privateKey);
const nativeVerify = async () => {
  if (!verify(null, message, native.publicKey, signature)) throw new Error('signature');
};

console.log(`Biscuit chains, Ed25519, ${ROUNDS} rounds x ${N} per operation (ms; p50/p99 are medians over rounds)`);
console.log('depth | bytes | +bytes/hop | mint p50 | append p50 | verify p50 | verify p99 | baseline p50 | verify / baseline | floor p50 | verify / floor');
for (let depth = 0; depth <= 5; depth++) {
  const token = chains[depth]!;
  const v50: number[] = []; const v99: number[] = []; const b50: number[] = []; const m50: number[] = []; const a50: number[] = []; const f50: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const v = await sample(() => verifyBiscuit(token, { rootKeys, request: { ...request, now: new Date() } }));
    const base = await sample(() => baseline(token));
    v50.push(pct(v, 0.5)); v99.push(pct(v, 0.99)); b50.push(pct(base, 0.5));
    f50.push(pct(await sample(nativeVerify), 0.5) * (1 + 2 * depth));
    if (depth === 0) m50.push(pct(await sample(mint), 0.5));
    else a50.push(pct(await sample(() => hop(chains[depth - 1]!, depth - 1)), 0.5));
  }
  const bytes = Buffer.from(token, 'base64url').length;
  const perHop = depth ? ((bytes - Buffer.from(chains[0]!, 'base64url').length) / depth).toFixed(0) : '-';
  console.log(`${depth}     | ${String(bytes).padStart(5)} | ${perHop.padStart(10)} | ${depth === 0 ? median(m50).toFixed(3).padStart(8) : '       -'} | ${depth ? median(a50).toFixed(3).padStart(10) : '         -'} | ${median(v50).toFixed(3).padStart(10)} | ${median(v99).toFixed(3).padStart(10)} | ${median(b50).toFixed(3).padStart(12)} | ${(median(v50) / median(b50)).toFixed(2).padStart(16)}x | ${median(f50).toFixed(3).padStart(9)} | ${(median(v50) / median(f50)).toFixed(2)}x`);
}

// One hop's bytes by what its block says: the first delegation of the chain above (narrowing the budget; then
// the tools too), as agent-sts writes it, and the same hop in a smaller vocabulary (the delegate's key inside the
// hop fact, facts named after the limit, variables named after symbols the block holds anyway), with nothing but
// the hop and the check, and as written with identifiers of 12 characters. Each is a third-party block signed by
// the delegator, appended to the depth-0 token.
{
  const b = await loadBiscuit();
  const hopParams = (short: boolean) => ({
    i: 1, delegator: short ? 'spiffe://a/0' : id(0), delegate: short ? 'spiffe://a/1' : id(1), context: 'step 1: narrow and hand on',
    delegate_key: keyBytes(biscuitKeyText(keys[1]!)), budget: 5000, rights: new Set(['search', 'read']),
  });
  const written = (withTools: boolean) => hopBlock({ index: 1, delegator: '', delegate: '', context: '', rights: withTools ? ['search', 'read'] : ['search', 'read', 'write', 'pay'], audiences: [TOOLS], budget: 5000, expires: exp, delegateKey: 'k' }, { rights: ['search', 'read', 'write', 'pay'], audiences: [TOOLS], budget: 10_000, expires: exp }).code;
  const smaller = 'hop({i}, {delegator}, {delegate}, {context}, {delegate_key}); budget({i}, {budget}); reject if spend($budget), $budget > {budget};';
  const smallerTools = 'tools({i}, {rights}); reject if tool($tools), !{rights}.contains($tools);';
  const variants: [string, string, boolean][] = [
    ['as agent-sts writes it', written(false), false],
    ['the same, smaller vocabulary', smaller, false],
    ['only the hop and the check', 'hop({i}, {delegator}, {delegate}, {context}, {delegate_key}); reject if spend($budget), $budget > {budget};', false],
    ['as written, 12-character identifiers', written(false), true],
    ['+ tools, as agent-sts writes it', written(true), false],
    ['+ tools, smaller vocabulary', `${smaller} ${smallerTools}`, false],
  ];
  const rootBytes = Buffer.from(chains[0]!, 'base64url').length;
  console.log('\nbytes one delegation adds (budget narrowed; "+ tools": the tools too), by what the block says');
  for (const [name, code, short] of variants) {
    const { biscuit } = parseBiscuit(b, chains[0]!, rootKeys);
    const next = appendThirdPartyBlock(b, biscuit, { code, params: hopParams(short) }, keys[0]!);
    console.log(`${name.padEnd(38)} | ${String(Buffer.from(next.toBase64(), 'base64url').length - rootBytes).padStart(4)}`);
    next.free();
    biscuit.free();
  }
}
