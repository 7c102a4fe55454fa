import { describe, expect, it } from 'vitest';
import { delegate } from '../../src/tokens/biscuit.js';
import { loadBiscuit } from '../../src/tokens/biscuit-wasm.js';
import { authority, mint, privateJwk, publicOf, rootKey } from '../support/biscuit.js';

/**
 * Our tokens verify with nothing but the plain @biscuit-auth/biscuit-wasm API and a hand-written
 * authorizer, following the facts and checks the README documents.
 */
describe('Biscuit interop with the plain library', () => {
  it('verifies a delegated chain with a hand-written authorizer', async () => {
    const root = await rootKey();
    const [a0, a1] = [await privateJwk(), await privateJwk()];
    const minted = await mint(root, authority('spiffe://agent-sts.test/a0', a0));
    const token = await delegate(minted, { delegate: 'spiffe://agent-sts.test/a1', delegateKey: publicOf(a1), context: 'read the report', tools: ['read'] }, a0, root.jwks);

    const b = await loadBiscuit();
    // The root key from the JWKS entry `biscuit-<id>`: its `x` is the raw Ed25519 key.
    const jwk = root.jwks.keys[0]!;
    const rootPublic = b.PublicKey.fromString(Buffer.from(jwk.x!, 'base64url').toString('hex'), b.SignatureAlgorithm.Ed25519);
    const parsed = b.Biscuit.fromBase64(token, rootPublic);
    expect(parsed.countBlocks()).toBe(2);

    const authorize = (tool: string) => {
      const builder = new b.AuthorizerBuilder();
      // Request facts, then a policy that also reads the chain: hop 1 must be signed by the holder's key.
      builder.addCodeWithParameters('time({now}); tool({tool}); resource({resource}); allow if true;', {
        now: { date: new Date().toISOString() }, tool, resource: 'https://tools.example',
      }, {});
      const authorizer = builder.buildAuthenticated(parsed);
      try {
        authorizer.authorizeWithLimits({ max_facts: 1000, max_iterations: 100, max_time_micro: 100_000 });
        // Keys are stored as bytes (32: Ed25519); `trusting` takes them in text form.
        const holderKeyBytes = authorizer.queryWithLimits(b.Rule.fromString('k($k) <- holder_key($k)'), { max_time_micro: 100_000 })[0].terms()[0] as number[];
        const holderKey = `ed25519/${Buffer.from(holderKeyBytes).toString('hex')}`;
        const hop = b.Rule.fromString('h($from, $to, $ctx) <- hop(1, $from, $to, $ctx) trusting {signer}');
        hop.setScope('signer', holderKey);
        return authorizer.queryWithLimits(hop, { max_time_micro: 100_000 }).map((f: { terms(): unknown[] }) => f.terms());
      } finally {
        authorizer.free();
      }
    };
    expect(authorize('read')).toEqual([['spiffe://agent-sts.test/a0', 'spiffe://agent-sts.test/a1', 'read the report']]);
    // The delegation block's own check refuses a tool it did not hand on; the authority's refuses one never granted.
    expect(() => authorize('write')).toThrow();
    expect(() => authorize('launch')).toThrow();
  });
});
