import type { AgentRecord, AgentsRepo } from './agents-repo.js';

/**
 * Agent records for the token endpoint's client lookups, kept for a short time. Changes made through this
 * server invalidate the entry at once; servers sharing the database see another server's change within
 * the time-to-live. Checks that decide whether a presented token is still good read the database.
 *
 * Concurrent lookups of an id that isn't cached share one read, so an entry expiring under load costs one
 * query, not one per request waiting. A read that an invalidation overtook is handed to the lookups that
 * were already waiting for it, but never cached: lookups after the invalidation read again.
 */
export class AgentsCache {
  private readonly entries = new Map<string, { agent: AgentRecord | undefined; until: number }>();
  private readonly reading = new Map<string, Promise<AgentRecord | undefined>>();

  constructor(private readonly repo: AgentsRepo, private readonly ttlMs: number, private readonly maxEntries = 10_000) {}

  /** Whether a record found is handed out again (the same object) for a while. */
  get keepsRecords(): boolean {
    return this.ttlMs > 0;
  }

  find(id: string): Promise<AgentRecord | undefined> {
    if (this.ttlMs <= 0) return this.repo.find(id);
    const hit = this.entries.get(id);
    if (hit && hit.until > Date.now()) return Promise.resolve(hit.agent);
    return this.reading.get(id) ?? this.read(id);
  }

  invalidate(id: string): void {
    this.entries.delete(id);
    this.reading.delete(id);
  }

  private read(id: string): Promise<AgentRecord | undefined> {
    const startedAt = Date.now();
    const current = () => this.reading.get(id) === read;
    const read: Promise<AgentRecord | undefined> = this.repo.find(id).then((agent) => {
      if (current()) {
        this.reading.delete(id);
        if (this.entries.size >= this.maxEntries && !this.entries.has(id)) this.entries.delete(this.entries.keys().next().value!);
        this.entries.set(id, { agent, until: startedAt + this.ttlMs });
      }
      return agent;
    }, (err: unknown) => {
      if (current()) this.reading.delete(id);
      throw err;
    });
    this.reading.set(id, read);
    return read;
  }
}
