import { beforeAll, describe, expect, it } from 'vitest';
import type { JWK } from 'jose';
import { delegate, verifyBiscuit, biscuitRootKeys, BiscuitError, readBiscuitChain } from '../../src/tokens/biscuit.js';
import { authority, mint, privateJwk, publicOf, rootKey, secondsFromNow } from '../support/biscuit.js';

const id = (n: string) => `spiffe://agent-sts.test/${n}`;

describe('Biscuit delegation chains', () => {
  let root: Awaited<ReturnType<typeof rootKey>>;
  const keys: JWK[] = [];
  beforeAll(async () => {
    root = await rootKey();
    for (let i = 0; i < 6; i++) keys.push(await privateJwk(i % 2 ? 'ES256' : 'EdDSA'));
  });

  const verify = (token: string, request: { tools?: string[]; resource?: string; spend?: number }) =>
    verifyBiscuit(token, { rootKeys: biscuitRootKeys(root.jwks), request: { resource: 'https://tools.example', ...request, now: new Date() } });

  it('a five-hop chain narrows at every hop and the last agent can use exactly what every hop allowed', async () => {
    let token = await mint(root, authority(id('a0'), keys[0]));
    const steps = [
      { tools: ['search', 'read', 'write', 'pay'], budget: 5000 },
      { tools: ['search', 'read', 'pay'], audience: ['https://tools.example'] },
      { tools: ['search', 'read'], budget: 2000, expires: secondsFromNow(300) },
      { tools: ['search', 'read'], budget: 1000 },
      { tools: ['read'] },
    ];
    for (const [i, step] of steps.entries()) {
      token = await delegate(token, { delegate: id(`a${i + 1}`), delegateKey: publicOf(keys[i + 1]!), context: `step ${i + 1}`, ...step }, keys[i]!, root.jwks);
    }
    const chain = await verify(token, { tools: ['read'], spend: 1000 });
    expect(chain.hops.map((h) => [h.delegator, h.delegate, h.signedBy])).toEqual(steps.map((_, i) => [id(`a${i}`), id(`a${i + 1}`), 'delegator']));
    expect(chain.current).toMatchObject({ holder: id('a5'), rights: ['read'], audiences: ['https://tools.example'], budget: 1000 });
    // A hop states only its own fields.
    expect(Object.keys(chain.hops[0]!).sort()).toEqual(['audiences', 'budget', 'context', 'delegate', 'delegateKey', 'delegator', 'expires', 'index', 'rights', 'signedBy']);
    for (const refused of [{ tools: ['search'] }, { tools: ['pay'] }, { tools: ['read'], spend: 1001 }, { tools: ['read'], resource: 'https://pay.example' }]) {
      await expect(verify(token, refused)).rejects.toMatchObject({ failure: 'request' });
    }
    const read = await readBiscuitChain(token, root.jwks);
    expect(read.hops).toHaveLength(5);
  });

  it('refuses a delegation by a key that is not the current delegate\'s, and widening at the source', async () => {
    const token = await mint(root, authority(id('a0'), keys[0]));
    await expect(delegate(token, { delegate: id('a1'), context: 'x' }, keys[1]!, root.jwks)).rejects.toMatchObject({ failure: 'signer' });
    await expect(delegate(token, { delegate: id('a1'), context: 'x', tools: ['root'] }, keys[0]!, root.jwks)).rejects.toMatchObject({ failure: 'widened' });
    await expect(delegate(token, { delegate: id('a1'), context: 'x', budget: 10_001 }, keys[0]!, root.jwks)).rejects.toMatchObject({ failure: 'widened' });
    await expect(delegate(token, { delegate: id('a1'), context: '  ' }, keys[0]!, root.jwks)).rejects.toBeInstanceOf(BiscuitError);
  });
});
