import { beforeAll, describe, expect, it } from 'vitest';
import type { JWK } from 'jose';
import { biscuitKeyText, biscuitRootKeys, delegate, verifyBiscuit, type BiscuitFailure, type HopFacts } from '../../src/tokens/biscuit.js';
import { authority, editBlocks, mint, privateJwk, publicOf, rawAppend, rawHop, rootKey, secondsFromNow } from '../support/biscuit.js';

const id = (n: string) => `spiffe://agent-sts.test/${n}`;
const TOOLS = 'https://tools.example';

/** Forged tokens built with the raw Biscuit API, bypassing agent-sts's delegation code: all refused. */
describe('Biscuit forgeries are refused at verification', () => {
  let root: Awaited<ReturnType<typeof rootKey>>;
  let k: JWK[];
  let t0: string;
  const hopExpires = secondsFromNow(300);
  beforeAll(async () => {
    root = await rootKey();
    k = [await privateJwk(), await privateJwk('ES256'), await privateJwk(), await privateJwk(), await privateJwk()];
    t0 = await mint(root, authority(id('a0'), k[0], { maxDepth: 3 }));
  });

  const hop = (i: number, over: Partial<HopFacts> = {}): HopFacts => ({
    index: i, delegator: id(`a${i - 1}`), delegate: id(`a${i}`), delegateKey: biscuitKeyText(k[i]!), context: `hop ${i}`,
    rights: ['search', 'read'], audiences: [TOOLS], budget: 100, expires: hopExpires, ...over,
  });
  const verify = (token: string, request: { tools?: string[]; spend?: number; resource?: string } = {}, revoked?: Set<string>) =>
    verifyBiscuit(token, { rootKeys: biscuitRootKeys(root.jwks), request: { resource: TOOLS, tools: ['read'], ...request, now: new Date() }, ...(revoked ? { revoked } : {}) });
  const refused = async (token: Promise<string> | string, failure: BiscuitFailure, block?: number, request?: Parameters<typeof verify>[1], revoked?: Set<string>) => {
    const err = await verify(await token, request, revoked).then(() => undefined, (e: unknown) => e);
    expect(err, 'the forged token was accepted').toMatchObject({ name: 'BiscuitError', failure, ...(block === undefined ? {} : { block }) });
  };

  it('accepts the honest chain these forgeries start from', async () => {
    const t1 = await rawHop(t0, root, hop(1), k[0]);
    const t2 = await rawHop(t1, root, hop(2), k[1]);
    await expect(verify(t2)).resolves.toMatchObject({ current: { holder: id('a2') } });
  });

  it('a block that widens tools, budget, expiry or audience', async () => {
    await refused(rawHop(t0, root, hop(1, { rights: ['search', 'read', 'root'] }), k[0]), 'widened', 1);
    await refused(rawHop(t0, root, hop(1, { budget: 10_001 }), k[0]), 'widened', 1);
    await refused(rawHop(t0, root, hop(1, { expires: secondsFromNow(7200) }), k[0]), 'widened', 1);
    await refused(rawHop(t0, root, hop(1, { audiences: [TOOLS, 'https://elsewhere.example'] }), k[0]), 'widened', 1);
    const t1 = await rawHop(t0, root, hop(1, { rights: ['read'] }), k[0]);
    await refused(rawHop(t1, root, hop(2, { rights: ['read', 'search'] }), k[1]), 'widened', 2);
  });

  it('a delegation beyond max_depth', async () => {
    let t = t0;
    for (let i = 1; i <= 3; i++) t = await rawHop(t, root, hop(i), k[i - 1]);
    await expect(verify(t)).resolves.toBeDefined();
    await refused(rawHop(t, root, hop(4), k[3]), 'depth', 4);
  });

  it('an empty or blank context', async () => {
    await refused(rawHop(t0, root, hop(1, { context: '' }), k[0]), 'context', 1);
    await refused(rawHop(t0, root, hop(1, { context: ' \t ' }), k[0]), 'context', 1);
    await refused(rawHop(t0, root, hop(1, { context: '\u200b\u200d\ufeff' }), k[0]), 'context', 1);
  });

  it('a delegator that is not the previous delegate', async () => {
    await refused(rawHop(t0, root, hop(1, { delegator: id('mallory') }), k[0]), 'delegator', 1);
    const t1 = await rawHop(t0, root, hop(1), k[0]);
    await refused(rawHop(t1, root, hop(2, { delegator: id('a0') }), k[1]), 'delegator', 2);
  });

  it('a third-party block signed by the wrong key, and an ordinary block where a signed one is required', async () => {
    const mallory = await privateJwk();
    await refused(rawHop(t0, root, hop(1), mallory), 'signer', 1);
    await refused(rawHop(t0, root, hop(1), k[1]), 'signer', 1);
    await refused(rawHop(t0, root, hop(1)), 'signer', 1);
    const t1 = await rawHop(t0, root, hop(1), k[0]);
    // The delegate's own key is not the delegator's.
    await refused(rawHop(t1, root, hop(2), k[2]), 'signer', 2);
    await refused(rawHop(t1, root, hop(2)), 'signer', 2);
    // A block that only adds checks, unsigned, still has no place in a chain.
    await refused(rawAppend(t1, root, 'check if time($t);', {}), 'signer', 2);
  });

  it('a holder with no key cannot sign a delegation; only the issuer can', async () => {
    const keyless = await mint(root, authority(id('a0'), undefined));
    await refused(rawHop(keyless, root, hop(1), k[0]), 'signer', 1);
    await expect(verify(await rawHop(keyless, root, hop(1), root.privateJwk))).resolves.toMatchObject({ hops: [{ signedBy: 'issuer' }] });
  });

  it('blocks reordered, removed or stated out of place', async () => {
    const t1 = await rawHop(t0, root, hop(1), k[0]);
    const t2 = await rawHop(t1, root, hop(2), k[1]);
    const t3 = await rawHop(t2, root, hop(3), k[2]);
    await refused(editBlocks(t3, ([a, b, c]) => [b!, a!, c!]), 'signature');
    await refused(editBlocks(t3, ([a, , c]) => [a!, c!]), 'signature');
    await refused(editBlocks(t3, ([a, b]) => [a!, b!]), 'signature');
    await refused(editBlocks(t3, ([, b, c]) => [b!, c!]), 'signature');
    // a0 states hop 2 in its own block: it is not a0's to state.
    await refused(rawHop(t0, root, hop(2, { index: 2 }), k[0]), 'signer', 1);
    // a1 states its hop twice, once beyond the chain's end.
    const extra = await rawAppend(t1, root, `${'hop({i}, {from}, {to}, {ctx});'}`, { i: 3, from: id('a1'), to: id('a9'), ctx: 'x' }, k[1]);
    await refused(extra, 'signer', 2);
  });

  it('a token from another root key, and one whose root key id is unknown', async () => {
    const other = await rootKey(7);
    await refused(mint(other, authority(id('a0'), k[0])), 'signature');
    await refused(mint(await rootKey(8), authority(id('a0'), k[0])), 'unknown_root');
  });

  it('a revoked ancestor refuses every token built on it', async () => {
    const { loadBiscuit } = await import('../../src/tokens/biscuit-wasm.js');
    const b = await loadBiscuit();
    const t1 = await rawHop(t0, root, hop(1), k[0]);
    const t2 = await rawHop(t1, root, hop(2), k[1]);
    const ids = b.Biscuit.fromBase64(t2, (await import('../../src/tokens/biscuit-keys.js')).biscuitPublicKey(b, root.text)).getRevocationIdentifiers() as string[];
    await refused(t2, 'revoked', 1, undefined, new Set([ids[1]!]));
    await refused(t2, 'revoked', 0, undefined, new Set([ids[0]!]));
    await expect(verify(t2, {}, new Set(['00']))).resolves.toBeDefined();
  });

  it('an expired hop', async () => {
    const t1 = await rawHop(t0, root, hop(1, { expires: secondsFromNow(-5) }), k[0]);
    await refused(t1, 'expired', 1);
    await refused(mint(root, authority(id('a0'), k[0], { expires: secondsFromNow(-1) })), 'expired', 0);
  });

  it('a block that narrows a limit twice or an unknown limit', async () => {
    const base = 'hop(1, {from}, {to}, {ctx});';
    const params = { from: id('a0'), to: id('a1'), ctx: 'x' };
    await refused(rawAppend(t0, root, `${base} narrow(1, "budget", 5); narrow(1, "budget", 6);`, params, k[0]), 'malformed', 1);
    await refused(rawAppend(t0, root, `${base} narrow(1, "root", true);`, params, k[0]), 'malformed', 1);
    await refused(rawAppend(t0, root, `${base} narrow(1, "tools", "read");`, params, k[0]), 'malformed', 1);
    // Leaving a limit out keeps the delegator's: this hop may still use every tool the authority granted.
    const t1 = await rawAppend(t0, root, base, params, k[0]);
    await expect(verify(t1, { tools: ['admin'] })).resolves.toMatchObject({ current: { holder: id('a1'), budget: 10_000 } });
  });

  it('a block whose checks were left out still binds through its facts', async () => {
    const t1 = await rawAppend(t0, root, 'hop(1, {from}, {to}, {ctx}); narrow(1, "tools", {r}); narrow(1, "audiences", {a}); narrow(1, "budget", 5); narrow(1, "expires", {e});',
      { from: id('a0'), to: id('a1'), ctx: 'no checks', r: new Set(['read']), a: new Set([TOOLS]), e: secondsFromNow(60) }, k[0]);
    await expect(verify(t1, { tools: ['read'], spend: 5 })).resolves.toBeDefined();
    await refused(t1, 'request', 1, { tools: ['search'] });
    await refused(t1, 'request', 1, { tools: ['read'], spend: 6 });
  });

  it('quotes, parentheses and Datalog keywords in identifiers and contexts stay data', async () => {
    const evil = 'x"); right("admin"); allow if true; check if false or true; //';
    const t1 = await delegate(t0, { delegate: evil, delegateKey: publicOf(k[1]!), context: `${evil} trusting authority (`, tools: ['read'] }, k[0]!, root.jwks);
    const chain = await verify(t1);
    expect(chain.hops[0]).toMatchObject({ delegate: evil, context: `${evil} trusting authority (` });
    await refused(t1, 'request', 1, { tools: ['admin'] });
    await refused(t1, 'request', 1, { tools: ['read"), tool("admin'] });
    // A tool name crafted to close the fact and add another is one odd tool name, nothing more.
    await expect(verifyBiscuit(t1, { rootKeys: biscuitRootKeys(root.jwks), request: { tools: ['read'], resource: `${TOOLS}"); resource("x`, now: new Date() } })).rejects.toMatchObject({ failure: 'request' });
  });

  it('oversize and pathological tokens: limits hold and the process stays up', async () => {
    await refused('A'.repeat(60_000), 'too_large');
    await refused('not base64!', 'malformed');
    await refused(Buffer.from('garbage that is no biscuit').toString('base64url'), 'malformed');
    // A rule whose joins explode (30^3 facts), in a block the delegator signed: the run limits stop it.
    const t1 = await rawHop(t0, root, hop(1), k[0]);
    const seeds = Array.from({ length: 30 }, (_, i) => `n(${i});`).join(' ');
    const loop = await rawAppend(t1, root, `${'hop(2, {from}, {to}, {ctx}); narrow(2, "tools", {r}); narrow(2, "budget", 1);'}
      ${seeds} x($a, $b, $c) <- n($a), n($b), n($c);`, { from: id('a1'), to: id('a2'), ctx: 'loop', r: new Set(['read']), a: new Set([TOOLS]), e: secondsFromNow(60) }, k[1]);
    const started = performance.now();
    await refused(loop, 'run_limit');
    expect(performance.now() - started).toBeLessThan(2000);
    // Many facts derived in one block (the token's size bounds the facts it can state outright).
    const facts = Array.from({ length: 1500 }, (_, i) => `f(${i});`).join(' ');
    await refused(rawAppend(t1, root, `hop(2, {from}, {to}, {ctx}); narrow(2, "tools", {r}); narrow(2, "budget", 1); ${facts} g($x) <- f($x);`,
      { from: id('a1'), to: id('a2'), ctx: 'many', r: new Set(['read']), a: new Set([TOOLS]), e: secondsFromNow(60) }, k[1]), 'run_limit');
    // And the library still works.
    await expect(verify(await rawHop(t0, root, hop(1), k[0]))).resolves.toBeDefined();
  });
});
