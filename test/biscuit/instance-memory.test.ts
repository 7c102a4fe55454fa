import { beforeAll, describe, expect, it } from 'vitest';
import type { JWK } from 'jose';
import { BISCUIT_INSTANCE_MAX_BYTES, biscuitInstance, loadBiscuit } from '../../src/tokens/biscuit-wasm.js';
import { biscuitPublicKey } from '../../src/tokens/biscuit-keys.js';
import { delegate, verifyBiscuit, biscuitRootKeys, BiscuitError } from '../../src/tokens/biscuit.js';
import { fromLibraryError } from '../../src/tokens/biscuit-errors.js';
import { authority, mint, privateJwk, publicOf, rootKey } from '../support/biscuit.js';

const id = (n: string) => `spiffe://agent-sts.test/${n}`;

// The package allocates with wee_alloc, whose freed memory is mostly never reused: one instance's memory only grows.
describe('Biscuit WebAssembly instances', () => {
  let root: Awaited<ReturnType<typeof rootKey>>;
  let chain: string;
  beforeAll(async () => {
    root = await rootKey();
    const keys: JWK[] = [];
    for (let i = 0; i < 6; i++) keys.push(await privateJwk('EdDSA'));
    chain = await mint(root, authority(id('a0'), keys[0]));
    for (let i = 0; i < 5; i++) {
      chain = await delegate(chain, { delegate: id(`a${i + 1}`), delegateKey: publicOf(keys[i + 1]!), context: `step ${i + 1}`, tools: ['read'] }, keys[i]!, root.jwks);
    }
  });

  const verify = (token: string) => verifyBiscuit(token, { rootKeys: biscuitRootKeys(root.jwks), request: { tools: ['read'], resource: 'https://tools.example', now: new Date() } });

  it('are replaced once their memory passes the limit, so memory stays bounded however many tokens are verified', async () => {
    await verify(chain);
    const first = biscuitInstance()!;
    let largest = 0;
    // Without replacement this many five-hop verifications grow one instance's memory by over 200 MB.
    for (let i = 0; i < 1800; i++) {
      const verified = await verify(chain);
      expect(verified.current.holder).toBe(id('a5'));
      largest = Math.max(largest, biscuitInstance()!.memoryBytes);
    }
    const last = biscuitInstance()!;
    expect(last.number).toBeGreaterThanOrEqual(first.number + 2);
    // One operation past the limit at most.
    expect(largest).toBeLessThan(BISCUIT_INSTANCE_MAX_BYTES + 8 * 1024 * 1024);
    // A later instance still refuses what the first refused.
    const tampered = `${chain.slice(0, 200)}${chain[200] === 'A' ? 'B' : 'A'}${chain.slice(201)}`;
    await expect(verify(tampered)).rejects.toBeInstanceOf(BiscuitError);
    await expect(verifyBiscuit(chain, { rootKeys: biscuitRootKeys(root.jwks), request: { tools: ['write'], now: new Date() } })).rejects.toMatchObject({ failure: 'request' });
  });

  it('are dropped after a trap, and the next operation gets a fresh one', async () => {
    const b = await loadBiscuit();
    const before = biscuitInstance()!.number;
    let trapped: unknown;
    try {
      // Not a key: the library panics, which traps.
      b.Biscuit.fromBase64WithProvider(chain, () => ({})).free();
    } catch (err) {
      trapped = err;
    }
    const { RuntimeError } = (globalThis as unknown as { WebAssembly: { RuntimeError: new () => Error } }).WebAssembly;
    expect(trapped).toBeInstanceOf(RuntimeError);
    expect(fromLibraryError(trapped, 'parsing')).toMatchObject({ failure: 'malformed' });
    const next = await loadBiscuit();
    expect(next).not.toBe(b);
    expect(biscuitInstance()!.number).toBe(before + 1);
    expect((await verify(chain)).current.holder).toBe(id('a5'));
  });

  it('refuse each other\'s objects rather than misread them', async () => {
    const b = await loadBiscuit();
    const key = biscuitPublicKey(b, root.text);
    const before = biscuitInstance()!.number;
    for (let i = 0; biscuitInstance()!.number === before && i < 2000; i++) await verify(chain);
    const next = await loadBiscuit();
    expect(next).not.toBe(b);
    expect(() => next.Biscuit.fromBase64(chain, key)).toThrow();
    // The object still works with its own instance.
    const parsed = b.Biscuit.fromBase64(chain, key);
    expect(parsed.countBlocks()).toBe(6);
    parsed.free();
    key.free();
  });
});
