import type { Knex } from 'knex';
import type { NewTokenRecord } from './tokens-repo.js';
import { TokensRepo } from './tokens-repo.js';

interface Pending {
  record: NewTokenRecord;
  issued: { action: string; client_id: string | null };
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit for issued-token records and their `issued` events: records arriving while a write is in
 * flight are written together in the next transaction. Each caller's promise settles only after the
 * transaction holding its record has committed, so no token leaves before its record is durable. When a
 * batch fails, its records are retried one by one so a single bad record fails alone.
 */
export class RecordWriter {
  private queue: Pending[] = [];
  private flushing = false;
  constructor(db: Knex, private readonly maxBatch = 256, private readonly tokens = new TokensRepo(db)) {}

  write(record: NewTokenRecord, issued: Pending['issued']): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ record, issued, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          if (batch.length === 1) await this.tokens.insert(batch[0]!.record, undefined, batch[0]!.issued);
          else await this.tokens.insertMany(batch);
          for (const p of batch) p.resolve();
        } catch (err) {
          if (batch.length === 1) {
            batch[0]!.reject(err);
            continue;
          }
          for (const p of batch) {
            try {
              await this.tokens.insert(p.record, undefined, p.issued);
              p.resolve();
            } catch (one) {
              p.reject(one);
            }
          }
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
