import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { JWK } from 'jose';
import { biscuitKeyText, biscuitRootKeys, verifyBiscuit, type HopFacts } from '../../src/tokens/biscuit.js';
import { authority, mint, privateJwk, rawHop, rootKey } from '../support/biscuit.js';

const TOOLS = ['search', 'read', 'write', 'pay', 'admin', 'delete'];
const AUDS = ['https://a.example', 'https://b.example', 'https://c.example'];
const id = (i: number) => `spiffe://agent-sts.test/agent-${i}`;

const step = fc.record({
  rights: fc.subarray(TOOLS),
  audiences: fc.subarray(AUDS),
  budget: fc.integer({ min: 0, max: 12_000 }),
  ttl: fc.integer({ min: 60, max: 900 }),
});
const request = fc.record({
  tools: fc.subarray(TOOLS, { maxLength: 2 }),
  resource: fc.constantFrom(...AUDS),
  spend: fc.option(fc.integer({ min: 0, max: 12_000 }), { nil: undefined }),
});

/**
 * Random chains built with the raw API (nothing checks the steps on the way), each step any set of
 * limits: a chain verifies only if no step widens, and then a request passes exactly when it is within
 * the intersection of every block.
 */
describe('Biscuit chains: what verifies is exactly the intersection of every hop', () => {
  let root: Awaited<ReturnType<typeof rootKey>>;
  const keys: JWK[] = [];
  beforeAll(async () => {
    root = await rootKey();
    for (let i = 0; i < 5; i++) keys.push(await privateJwk(i % 2 ? 'ES256' : 'EdDSA'));
  });

  const seen: Record<string, number> = {};
  it('holds for random chains and requests', async () => {
    await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 0, maxLength: 4 }), request, async (steps, req) => {
      const nowSec = Math.floor(Date.now() / 1000);
      const base = { rights: TOOLS.slice(0, 5), audiences: AUDS, budget: 10_000, expires: new Date((nowSec + 1000) * 1000) };
      let token = await mint(root, authority(id(0), keys[0], { ...base, maxDepth: 4 }));
      const blocks = [base];
      for (const [i, s] of steps.entries()) {
        const hop: HopFacts = {
          index: i + 1, delegator: id(i), delegate: id(i + 1), delegateKey: biscuitKeyText(keys[i + 1]!), context: `step ${i + 1}`,
          rights: s.rights, audiences: s.audiences, budget: s.budget, expires: new Date((nowSec + s.ttl) * 1000),
        };
        token = await rawHop(token, root, hop, keys[i]);
        blocks.push(hop);
      }
      const narrowing = blocks.every((blk, i) => i === 0 || (
        blk.rights.every((r) => blocks[i - 1]!.rights.includes(r)) && blk.audiences.every((a) => blocks[i - 1]!.audiences.includes(a))
        && blk.budget <= blocks[i - 1]!.budget && blk.expires <= blocks[i - 1]!.expires));
      const within = blocks.every((blk) => req.tools.every((t) => blk.rights.includes(t)) && blk.audiences.includes(req.resource) && (req.spend === undefined || req.spend <= blk.budget));
      const outcome = await verifyBiscuit(token, { rootKeys: biscuitRootKeys(root.jwks), request: { ...req, now: new Date() } }).then(() => 'accepted', (e: { failure: string }) => e.failure);
      seen[outcome] = (seen[outcome] ?? 0) + 1;
      if (!narrowing) expect(outcome).toBe('widened');
      else expect(outcome).toBe(within ? 'accepted' : 'request');
    }), { numRuns: Number(process.env.BISCUIT_PROPERTY_RUNS ?? 150) });
    // Every branch was exercised.
    expect(Object.keys(seen).sort()).toEqual(['accepted', 'request', 'widened']);
  });
});
