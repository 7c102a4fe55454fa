import { describe, expect, it } from 'vitest';
import { randomId } from '../../src/tokens/random-id.js';

describe('random identifiers from the pooled CSPRNG', () => {
  it('are distinct, of the asked size, across many pool refills', () => {
    const ids = Array.from({ length: 20_000 }, () => randomId(24));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids.slice(0, 200)) expect(Buffer.from(id, 'base64url')).toHaveLength(24);
    // Sizes that don't divide the pool cross its end: still the asked size, still unique.
    const odd = Array.from({ length: 5_000 }, () => randomId(17));
    expect(new Set(odd).size).toBe(odd.length);
    expect(odd.every((id) => Buffer.from(id, 'base64url').length === 17)).toBe(true);
  });

  it('look uniform: every byte value turns up, none far more often than the others', () => {
    const counts = new Array<number>(256).fill(0);
    for (let i = 0; i < 4_000; i++) for (const b of Buffer.from(randomId(32), 'base64url')) counts[b]!++;
    // 128,000 bytes: 500 per value expected; a CSPRNG stays well within 380-620.
    expect(Math.min(...counts)).toBeGreaterThan(380);
    expect(Math.max(...counts)).toBeLessThan(620);
  });

  it('refuses sizes it cannot serve', () => {
    for (const n of [0, -1, 1.5, 4097, Number.NaN]) expect(() => randomId(n)).toThrow(RangeError);
  });
});
