import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BiscuitLibraryError, datalogParams, datalogTerm, loadBiscuit } from '../../src/tokens/biscuit-wasm.js';
import { fromLibraryError } from '../../src/tokens/biscuit-errors.js';

describe('loading @biscuit-auth/biscuit-wasm on Node 20 without flags', () => {
  it('loads once per process and authorizes with parameters and run limits', async () => {
    const [b, again] = await Promise.all([loadBiscuit(), loadBiscuit()]);
    expect(again).toBe(b);
    const root = new b.KeyPair(b.SignatureAlgorithm.Ed25519);
    const builder = new b.BiscuitBuilder();
    builder.addCodeWithParameters('right({tool}); check if tool($t), right($t); check if time($now), $now <= {exp}', datalogParams({ tool: 'search', exp: new Date(Date.now() + 60_000) }), {});
    const token = builder.build(root.getPrivateKey());
    const parsed = b.Biscuit.fromBase64(token.toBase64(), root.getPublicKey());

    const authorize = (tool: string) => {
      const a = new b.AuthorizerBuilder();
      a.addCodeWithParameters('tool({tool}); time({now}); allow if true', datalogParams({ tool, now: new Date() }), {});
      const authorizer = a.buildAuthenticated(parsed);
      try {
        return authorizer.authorizeWithLimits({ max_time_micro: 100_000, max_facts: 1000, max_iterations: 100 });
      } finally {
        authorizer.free();
      }
    };
    const started = performance.now();
    expect(authorize('search')).toBe(0);
    expect(performance.now() - started).toBeLessThan(50);
    // A quote cannot break out of a parameter; the check simply fails.
    expect(() => authorize('search"); allow if true; //')).toThrow();
    expect(() => datalogTerm(1.5)).toThrow(TypeError);
    expect(() => datalogTerm({})).toThrow(TypeError);
  });

  it('turns every value the library throws into an Error that states it, which fromLibraryError still reads', async () => {
    const b = await loadBiscuit();
    const thrown: unknown[] = [];
    for (const attempt of [
      () => new b.AuthorizerBuilder().addCode('this is not Datalog'),
      () => b.Biscuit.fromBase64('AAAA', new b.KeyPair(b.SignatureAlgorithm.Ed25519).getPublicKey()),
      () => b.Rule.fromString('not a rule'),
    ]) {
      try {
        attempt();
      } catch (err) {
        thrown.push(err);
      }
    }
    expect(thrown).toHaveLength(3);
    for (const err of thrown) {
      expect(err).toBeInstanceOf(BiscuitLibraryError);
      expect((err as Error).message).toMatch(/^biscuit-wasm: \S/);
      expect((err as Error).message).not.toMatch(/undefined|\[object Object\]/);
    }
    expect(fromLibraryError(thrown[1], 'parsing')).toMatchObject({ failure: 'malformed' });
  });

  it('keeps stdout clean in a plain Node process', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', '-e', "import('./src/tokens/biscuit-wasm.ts').then((m) => m.loadBiscuit()).then(() => console.log('ready'))"], { encoding: 'utf8', timeout: 30_000 });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe('ready');
  });
});
