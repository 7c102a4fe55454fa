import { Readable } from 'node:stream';
import type { Logger } from '../../log/logger.js';
import type { AuditDecision, AuditFilter, AuditRepo, AuditToken } from '../../storage/audit-repo.js';

export type AuditKind = 'token' | 'decision';

/** Reads one source a page at a time; holds at most one page. */
class Pager<T> {
  private rows: T[] = [];
  private index = 0;
  private done = false;

  constructor(private readonly fetch: (last: T | undefined) => Promise<T[]>, private readonly pageSize: number) {}

  /** The next row without taking it; undefined at the end. */
  async peek(): Promise<T | undefined> {
    if (this.index < this.rows.length) return this.rows[this.index];
    if (this.done) return undefined;
    const last = this.rows.at(-1);
    this.rows = await this.fetch(last);
    this.index = 0;
    if (this.rows.length < this.pageSize) this.done = true;
    return this.rows[0];
  }

  take(): void {
    this.index++;
  }
}

const tokenLine = (t: AuditToken) => JSON.stringify({ kind: 'token', at: new Date(t.iat * 1000).toISOString(), ...t });

const decisionLine = (d: AuditDecision) => JSON.stringify({
  kind: 'decision', at: new Date(d.atMs).toISOString(), id: d.id, decision: d.decision, action: d.action, client_id: d.client_id,
  jti: d.jti, reason: d.reason, detail: d.detail, sub: d.sub, txn: d.txn,
});

/**
 * Issued-token records and decision events merged in time order, as NDJSON chunks. A token sorts at its
 * `iat` (whole seconds), so it comes before the event recording its issue. Each source is read in pages
 * of `pageSize` rows with a keyset cursor; nothing holds a connection between pages.
 */
export async function* auditLines(repo: AuditRepo, filter: AuditFilter, kinds: ReadonlySet<AuditKind>, pageSize = 500): AsyncGenerator<string> {
  const tokens = new Pager<AuditToken>((last) => (kinds.has('token')
    ? repo.tokens(filter, last && { iat: last.iat, jti: last.jti }, pageSize)
    : Promise.resolve([])), pageSize);
  const decisions = new Pager<AuditDecision>((last) => (kinds.has('decision')
    ? repo.decisions(filter, last && { cursor: last.cursor, id: last.id }, pageSize)
    : Promise.resolve([])), pageSize);
  let chunk = '';
  for (;;) {
    const t = await tokens.peek();
    const d = await decisions.peek();
    if (!t && !d) break;
    if (t && (!d || t.iat * 1000 <= d.atMs)) {
      chunk += `${tokenLine(t)}\n`;
      tokens.take();
    } else {
      chunk += `${decisionLine(d!)}\n`;
      decisions.take();
    }
    if (chunk.length >= 64 * 1024) {
      yield chunk;
      chunk = '';
    }
  }
  if (chunk) yield chunk;
}

/**
 * The export as a byte stream with backpressure: pages are read only as the client takes the data. A
 * database error mid-stream is logged and ends the response abnormally, so a client never takes a cut
 * export for a whole one.
 */
export function auditStream(repo: AuditRepo, filter: AuditFilter, kinds: ReadonlySet<AuditKind>, logger: Logger, pageSize?: number): Readable {
  async function* guarded(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of auditLines(repo, filter, kinds, pageSize)) yield Buffer.from(chunk);
    } catch (err) {
      logger.error({ err: { message: (err as Error).message } }, 'audit export failed mid-stream');
      throw err;
    }
  }
  return Readable.from(guarded(), { objectMode: false });
}
