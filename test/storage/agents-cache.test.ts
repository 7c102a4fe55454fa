import { describe, expect, it } from 'vitest';
import { AgentsCache } from '../../src/storage/agents-cache.js';
import type { AgentRecord, AgentsRepo } from '../../src/storage/agents-repo.js';

/** A repository whose reads stay pending until the test settles them, counting them. */
function controlledRepo() {
  const pending: { id: string; resolve: (a: AgentRecord | undefined) => void; reject: (e: Error) => void }[] = [];
  const repo = {
    find: (id: string) => new Promise<AgentRecord | undefined>((resolve, reject) => pending.push({ id, resolve, reject })),
  } as unknown as AgentsRepo;
  return { repo, pending };
}

const agent = (id: string, status: string) => ({ id, status }) as unknown as AgentRecord;
const tick = () => new Promise((r) => setImmediate(r));

describe('agents cache', () => {
  it('answers concurrent lookups of an uncached agent with one read, then from memory', async () => {
    const { repo, pending } = controlledRepo();
    const cache = new AgentsCache(repo, 60_000);
    const lookups = Array.from({ length: 20 }, () => cache.find('a'));
    expect(pending).toHaveLength(1);
    pending[0]!.resolve(agent('a', 'active'));
    const found = await Promise.all(lookups);
    expect(new Set(found).size).toBe(1);
    expect(found[0]!.status).toBe('active');
    expect((await cache.find('a'))!.status).toBe('active');
    expect(pending).toHaveLength(1);
  });

  it('never caches a read that an invalidation overtook: the next lookup reads again', async () => {
    const { repo, pending } = controlledRepo();
    const cache = new AgentsCache(repo, 60_000);
    const before = cache.find('a');
    // The agent is disabled through this server while a read that saw it active is in flight.
    cache.invalidate('a');
    pending[0]!.resolve(agent('a', 'active'));
    expect((await before)!.status).toBe('active');
    const after = cache.find('a');
    expect(pending).toHaveLength(2);
    pending[1]!.resolve(agent('a', 'disabled'));
    expect((await after)!.status).toBe('disabled');
    expect((await cache.find('a'))!.status).toBe('disabled');
    expect(pending).toHaveLength(2);
  });

  it('does not hand a lookup made after an invalidation the read that was in flight before it', async () => {
    const { repo, pending } = controlledRepo();
    const cache = new AgentsCache(repo, 60_000);
    const before = cache.find('a');
    cache.invalidate('a');
    const after = cache.find('a');
    expect(pending).toHaveLength(2);
    pending[1]!.resolve(agent('a', 'disabled'));
    pending[0]!.resolve(agent('a', 'active'));
    expect((await before)!.status).toBe('active');
    expect((await after)!.status).toBe('disabled');
    await tick();
    expect((await cache.find('a'))!.status).toBe('disabled');
  });

  it('does not cache a failed read, and reads again on the next lookup', async () => {
    const { repo, pending } = controlledRepo();
    const cache = new AgentsCache(repo, 60_000);
    const first = Promise.all([cache.find('a'), cache.find('a')]);
    pending[0]!.reject(new Error('database unavailable'));
    await expect(first).rejects.toThrow('database unavailable');
    const second = cache.find('a');
    expect(pending).toHaveLength(2);
    pending[1]!.resolve(agent('a', 'active'));
    expect((await second)!.status).toBe('active');
  });

  it('expires an entry after its time to live, counted from when the read began', async () => {
    const { repo, pending } = controlledRepo();
    const cache = new AgentsCache(repo, 30);
    const first = cache.find('a');
    await new Promise((r) => setTimeout(r, 40));
    pending[0]!.resolve(agent('a', 'active'));
    await first;
    void cache.find('a');
    expect(pending).toHaveLength(2);
  });

  it('reads every time with a time to live of 0', async () => {
    const { repo, pending } = controlledRepo();
    const cache = new AgentsCache(repo, 0);
    void cache.find('a');
    void cache.find('a');
    expect(pending).toHaveLength(2);
  });
});
