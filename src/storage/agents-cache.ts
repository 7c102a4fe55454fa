import type { AgentRecord, AgentsRepo } from './agents-repo.js';

/**
 * Agent records for the token endpoint's client lookups, kept for a short time. Changes made through this
 * server invalidate the entry at once; servers sharing the database see another server's change within
 * the time-to-live. Checks that decide whether a presented token is still good read the database.
 */
export class AgentsCache {
  private readonly entries = new Map<string, { agent: AgentRecord | undefined; until: number }>();

  constructor(private readonly repo: AgentsRepo, private readonly ttlMs: number, private readonly maxEntries = 10_000) {}

  /** Whether a record found is handed out again (the same object) for a while. */
  get keepsRecords(): boolean {
    return this.ttlMs > 0;
  }

  async find(id: string): Promise<AgentRecord | undefined> {
    if (this.ttlMs <= 0) return this.repo.find(id);
    const now = Date.now();
    const hit = this.entries.get(id);
    if (hit && hit.until > now) return hit.agent;
    const agent = await this.repo.find(id);
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(id, { agent, until: now + this.ttlMs });
    return agent;
  }

  invalidate(id: string): void {
    this.entries.delete(id);
  }
}
