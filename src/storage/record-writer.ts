import type { Knex } from 'knex';
import type { NewTokenRecord } from './tokens-repo.js';
import { TokensRepo } from './tokens-repo.js';

interface Pending {
  record: NewTokenRecord;
  issued: { action: string; client_id: string | null };
  /** Insert only while the record's transaction holds fewer tokens of its type than this. */
  maxPerTxn?: number;
  resolve: (inserted: boolean) => void;
  reject: (err: unknown) => void;
}

/**
 * Group commit for issued-token records and their `issued` events: records arriving while a write is in
 * flight are written together in the next batch. Each caller's promise settles only after the statement
 * or transaction holding its record has committed, so no token leaves before its record is durable.
 * Records limited per transaction (Txn-Tokens) are counted and inserted under their transactions' locks
 * in the batch's transaction. When a batch fails, its records are retried one by one so a single bad
 * record fails alone.
 */
export class RecordWriter {
  private queue: Pending[] = [];
  private flushing = false;
  constructor(db: Knex, private readonly maxBatch = 256, private readonly tokens = new TokensRepo(db)) {}

  async write(record: NewTokenRecord, issued: Pending['issued']): Promise<void> {
    await this.enqueue(record, issued);
  }

  /** Writes the record unless its transaction already holds `max` tokens of its type; false when refused. */
  writeWithinTxnLimit(record: NewTokenRecord, issued: Pending['issued'], max: number): Promise<boolean> {
    if (!record.txn) throw new Error('a record limited per transaction needs a txn');
    return this.enqueue(record, issued, max);
  }

  private enqueue(record: NewTokenRecord, issued: Pending['issued'], maxPerTxn?: number): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.queue.push({ record, issued, ...(maxPerTxn !== undefined ? { maxPerTxn } : {}), resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          const inserted = await this.writeBatch(batch);
          batch.forEach((p, i) => p.resolve(inserted[i]!));
        } catch (err) {
          if (batch.length === 1) {
            batch[0]!.reject(err);
            continue;
          }
          for (const p of batch) {
            try {
              p.resolve((await this.writeBatch([p]))[0]!);
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

  private async writeBatch(batch: Pending[]): Promise<boolean[]> {
    if (batch.some((p) => p.maxPerTxn !== undefined)) return this.tokens.insertManyWithinTxnLimits(batch);
    if (batch.length === 1) await this.tokens.insert(batch[0]!.record, undefined, batch[0]!.issued);
    else await this.tokens.insertMany(batch);
    return batch.map(() => true);
  }
}
