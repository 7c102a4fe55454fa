import type { Knex } from 'knex';
import { TokensRepo, type BatchItem, type BatchOutcome, type NewTokenRecord } from './tokens-repo.js';
import { DatabaseTimeoutError } from './bounded-pg-client.js';
import { isDatabaseUnavailable } from './database-errors.js';

interface Pending extends BatchItem {
  resolve: (outcome: BatchOutcome) => void;
  reject: (err: unknown) => void;
  /** Settled already (its deadline passed): whatever its batch does is ignored for it. */
  settled: boolean;
}

/** The conditions a record is written under (see {@link TokensRepo.insertBatch}). */
export type WriteConditions = Pick<BatchItem, 'maxPerTxn' | 'parent'>;

/**
 * Group commit for issued-token records and their `issued` events: records arriving while a write is in
 * flight are written together in the next batch. Each caller's promise settles only after the statement
 * or transaction holding its record has committed, so no token leaves before its record is durable. A
 * record's conditions (the token it was exchanged for still good, its transaction's limit) are checked
 * for the whole batch at once, as it is written. When a batch fails, its records are retried one by one
 * so a single bad record fails alone; when it failed because the database could not be reached, they all fail
 * at once.
 *
 * With a deadline, a caller whose record has not committed within `deadlineMs` of its call (waiting behind a
 * batch the database does not answer, or in one) gets a {@link DatabaseTimeoutError}, at that moment, and a
 * record still queued is then never written. One whose batch was already sent may still commit later: a record
 * without its token, never a token without its record.
 */
export class RecordWriter {
  private queue: Pending[] = [];
  private flushing = false;
  constructor(db: Knex, private readonly maxBatch = 256, private readonly tokens = new TokensRepo(db), private readonly deadlineMs?: number) {}

  /** Writes the record if its conditions hold; says whether it was written or which condition refused it. */
  write(record: NewTokenRecord, issued: BatchItem['issued'], conditions: WriteConditions = {}): Promise<BatchOutcome> {
    if (conditions.maxPerTxn !== undefined && !record.txn) throw new Error('a record limited per transaction needs a txn');
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const pending: Pending = {
        record, issued, ...conditions, settled: false,
        resolve: (outcome) => {
          clearTimeout(timer);
          pending.settled = true;
          resolve(outcome);
        },
        reject: (err) => {
          clearTimeout(timer);
          pending.settled = true;
          reject(err);
        },
      };
      if (this.deadlineMs !== undefined) {
        const ms = this.deadlineMs;
        timer = setTimeout(() => {
          const queued = this.queue.indexOf(pending);
          if (queued >= 0) this.queue.splice(queued, 1);
          pending.reject(new DatabaseTimeoutError(`the token record was not committed within ${ms} ms`));
        }, ms);
      }
      this.queue.push(pending);
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
          if (batch.length === 1 || isDatabaseUnavailable(err)) {
            for (const p of batch) p.reject(err);
            continue;
          }
          for (const p of batch) {
            if (p.settled) continue;
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
