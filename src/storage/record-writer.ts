import type { Knex } from 'knex';
import { TokensRepo, type BatchItem, type BatchOutcome, type NewTokenRecord } from './tokens-repo.js';

interface Pending extends BatchItem {
  resolve: (outcome: BatchOutcome) => void;
  reject: (err: unknown) => void;
}

/** The conditions a record is written under (see {@link TokensRepo.insertBatch}). */
export type WriteConditions = Pick<BatchItem, 'maxPerTxn' | 'parent'>;

/**
 * Group commit for issued-token records and their `issued` events: records arriving while a write is in
 * flight are written together in the next batch. Each caller's promise settles only after the statement
 * or transaction holding its record has committed, so no token leaves before its record is durable. A
 * record's conditions (the token it was exchanged for still good, its transaction's limit) are checked
 * for the whole batch at once, as it is written. When a batch fails, its records are retried one by one
 * so a single bad record fails alone.
 */
export class RecordWriter {
  private queue: Pending[] = [];
  private flushing = false;
  constructor(db: Knex, private readonly maxBatch = 256, private readonly tokens = new TokensRepo(db)) {}

  /** Writes the record if its conditions hold; says whether it was written or which condition refused it. */
  write(record: NewTokenRecord, issued: BatchItem['issued'], conditions: WriteConditions = {}): Promise<BatchOutcome> {
    if (conditions.maxPerTxn !== undefined && !record.txn) throw new Error('a record limited per transaction needs a txn');
    return new Promise((resolve, reject) => {
      this.queue.push({ record, issued, ...conditions, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          const outcomes = await this.tokens.insertBatch(batch);
          batch.forEach((p, i) => p.resolve(outcomes[i]!));
        } catch (err) {
          if (batch.length === 1) {
            batch[0]!.reject(err);
            continue;
          }
          for (const p of batch) {
            try {
              p.resolve((await this.tokens.insertBatch([p]))[0]!);
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
