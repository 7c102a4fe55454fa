import { randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Logger } from '../log/logger.js';
import type { OutboxRow, SsfRepo, StreamRecord } from '../storage/ssf-repo.js';
import { SET_MEDIA_TYPE } from '../tokens/security-event.js';
import type { PushTarget } from './push-target.js';

export const PUSH_METHOD = 'urn:ietf:rfc:8935';

export interface PushOptions {
  /** First retry delay after a failed delivery (ms); doubles per attempt up to `retryMaxMs`. */
  retryMinMs: number;
  retryMaxMs: number;
  /** A stream whose receiver fails this long (ms) is paused. */
  pauseAfterMs: number;
  /** Timeout of one delivery request (ms). */
  timeoutMs: number;
  /** How often to look for due events even without a wake-up (events written by other servers, retries). */
  sweepMs: number;
}

type Outcome = { ok: true } | { ok: false; permanent: boolean; error: string };

const BATCH = 20;
/** Streams one server delivers at the same time. */
const MAX_ACTIVE = 50;

/**
 * RFC 8935 push delivery from the outbox. Each stream is delivered in outbox order by one server at a
 * time (a lease on the stream row), one event after the other, so a receiver sees each subject's events
 * in order; a failing event blocks its stream (retried with exponential back-off) until it is delivered,
 * refused for good (400) or the stream pauses. Streams are delivered independently of each other (a slow
 * receiver delays only its own stream), each for a turn of at most one batch or one push timeout, after
 * which the stream goes back to the end of the line of due streams.
 */
export class PushWorker {
  private readonly owner = randomBytes(8).toString('hex');
  private running: Promise<void> | undefined;
  /** The deliveries in progress, by stream. */
  private readonly active = new Map<string, Promise<void>>();
  private again = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  /** How long this server holds a stream before another may take it over (a server that died holding it). */
  private readonly leaseMs: number;

  constructor(private readonly deps: {
    repo: SsfRepo;
    opts: PushOptions;
    logger: Logger;
    sign: (stream: StreamRecord, row: OutboxRow) => Promise<string>;
    /**
     * Checks a push endpoint against the configured rules and resolves its host, checking every address:
     * the address to connect to, or a reason it may not be used.
     */
    target: (url: string, stream: StreamRecord) => Promise<PushTarget | { refused: string; detail?: string }>;
    pause: (stream: StreamRecord, reason: string) => Promise<void>;
    /** The stream's authorization header in clear. */
    authorization: (stream: StreamRecord) => string | null;
  }) {
    // One event: waiting for a lookup turn, the lookup and the request, each bounded by the push timeout.
    this.leaseMs = 3 * deps.opts.timeoutMs + 10_000;
  }

  /** Looks for due events now (called once a transaction writing events has committed). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.loop()
      .catch((err: Error) => this.deps.logger.warn({ err: { message: err.message } }, 'security event delivery failed; retrying'))
      .finally(() => {
        this.running = undefined;
        if (this.stopped) return;
        if (this.again) this.wake();
        else void this.schedule();
      });
  }

  /** Stops delivering; waits for the deliveries in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await Promise.all(this.active.values());
  }

  private async schedule(): Promise<void> {
    let delay = this.deps.opts.sweepMs;
    try {
      const due = await this.deps.repo.nextDue(PUSH_METHOD);
      if (due !== undefined) delay = Math.min(delay, Math.max(10, due - Date.now() + 5));
    } catch { /* the sweep retries */ }
    if (this.stopped || this.running) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.wake(), delay);
    this.timer.unref();
  }

  private async loop(): Promise<void> {
    for (;;) {
      this.again = false;
      const free = MAX_ACTIVE - this.active.size;
      const streams = free > 0 ? await this.deps.repo.claimDueStreams(PUSH_METHOD, this.owner, Date.now(), this.leaseMs, free) : [];
      for (const s of streams) this.start(s);
      if (this.stopped || (!streams.length && !this.again)) return;
    }
  }

  /** Delivers a claimed stream without waiting for it; when its turn ends, looks for due streams again. */
  private start(stream: StreamRecord): void {
    // Still delivering it (its lease ran out meanwhile and was taken again by this server): one delivery at a time.
    if (this.active.has(stream.stream_id)) return;
    const delivery = this.deliverStream(stream)
      .catch((err: Error) => this.deps.logger.warn({ err: { message: err.message }, stream_id: stream.stream_id }, 'security event delivery failed; retrying'))
      .finally(() => {
        this.active.delete(stream.stream_id);
        this.wake();
      });
    this.active.set(stream.stream_id, delivery);
  }

  private async deliverStream(claimed: StreamRecord): Promise<void> {
    const { repo } = this.deps;
    const turnEnds = Date.now() + this.deps.opts.timeoutMs;
    try {
      const stream = await repo.findStream(claimed.stream_id);
      if (this.stopped || !stream || stream.status !== 'enabled' || stream.delivery_method !== PUSH_METHOD) return;
      const rows = await repo.pending(stream.stream_id, BATCH);
      if (!rows.length) return;
      for (const [i, row] of rows.entries()) {
        // The turn is over (one batch, or one push timeout after its first event): to the end of the line.
        if (i > 0 && Date.now() >= turnEnds) break;
        if (this.stopped || !(await repo.renewLease(stream.stream_id, this.owner, Date.now() + this.leaseMs))) return;
        const outcome = await this.post(stream, row);
        if (outcome.ok) {
          await repo.markDelivered(row.id);
          continue;
        }
        if (outcome.permanent) {
          // RFC 8935 §2.3: the receiver refused this SET for good; it is recorded and not sent again.
          await repo.markFailed(row.id, outcome.error);
          this.deps.logger.warn({ stream_id: stream.stream_id, jti: row.jti, error: outcome.error }, 'security event refused by the receiver');
          continue;
        }
        const now = Date.now();
        const failingSince = await repo.markRetry(row.id, now, outcome.error);
        if (now - failingSince >= this.deps.opts.pauseAfterMs) {
          // The receiver sees its HTTP status, not which network error it was (no probing of hosts through it).
          const shown = outcome.error.startsWith('HTTP ') ? outcome.error : 'the receiver could not be reached';
          const reason = `the receiver failed to accept events for ${Math.round((now - failingSince) / 1000)} s: ${shown}`;
          this.deps.logger.warn({ stream_id: stream.stream_id, error: outcome.error }, 'push receiver unreachable: stream paused');
          await this.deps.pause(stream, reason.slice(0, 300));
          return;
        }
        const delay = Math.min(this.deps.opts.retryMaxMs, this.deps.opts.retryMinMs * 2 ** Math.min(row.attempts, 30));
        await repo.retryStreamAt(stream.stream_id, now + Math.round(delay * (0.8 + Math.random() * 0.4)));
        return;
      }
      // Events left: due again now, after the streams that have waited longer.
      if (!this.stopped) await repo.retryStreamAt(stream.stream_id, Date.now());
    } finally {
      await repo.releaseLease(claimed.stream_id, this.owner).catch(() => {});
    }
  }

  private async post(stream: StreamRecord, row: OutboxRow): Promise<Outcome> {
    const target = await this.deps.target(stream.endpoint_url ?? '', stream);
    if ('refused' in target) return { ok: false, permanent: false, error: `refused: ${target.detail ?? target.refused}` };
    let set: string;
    let authorization: string | null;
    try {
      authorization = this.deps.authorization(stream);
      set = await this.deps.sign(stream, row);
    } catch (err) {
      return { ok: false, permanent: false, error: `cannot prepare the request: ${(err as Error).message}` };
    }
    try {
      const res = await postTo(target, {
        'content-type': SET_MEDIA_TYPE,
        accept: 'application/json',
        ...(authorization ? { authorization } : {}),
      }, set, this.deps.opts.timeoutMs);
      const text = res.text;
      if (res.status === 202 || res.status === 200) return { ok: true };
      if (res.status === 400) {
        let err = 'invalid_request';
        let description = '';
        try {
          const body = JSON.parse(text) as { err?: unknown; description?: unknown };
          if (typeof body.err === 'string') err = body.err.slice(0, 100);
          if (typeof body.description === 'string') description = body.description.slice(0, 300);
        } catch { /* not JSON */ }
        return { ok: false, permanent: true, error: `${err}${description ? `: ${description}` : ''}` };
      }
      return { ok: false, permanent: false, error: `HTTP ${res.status}` };
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      return { ok: false, permanent: false, error: e.name === 'TimeoutError' || e.name === 'AbortError' ? 'timed out' : ((e as { code?: string }).code ?? e.cause?.code ?? e.message).slice(0, 200) };
    }
  }
}

/** Most of a receiver's answer read (its `err` and `description`); the rest is dropped. */
const MAX_ANSWER = 64 * 1024;

/**
 * POSTs to a checked push target, connecting to the address that was checked (the host name still goes in
 * `Host` and, for https, in SNI and the certificate check). Redirects are not followed; the whole exchange is
 * bounded by `timeoutMs`.
 */
function postTo(target: PushTarget, headers: Record<string, string>, body: string, timeoutMs: number): Promise<{ status: number; text: string }> {
  const pinned: LookupFunction = (_host, options, callback) => {
    if (options.all) (callback as unknown as (err: null, addresses: { address: string; family: number }[]) => void)(null, [{ address: target.address, family: target.family }]);
    else callback(null, target.address, target.family);
  };
  const options: RequestOptions = {
    method: 'POST',
    headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
    lookup: pinned,
    agent: false,
    signal: AbortSignal.timeout(timeoutMs),
  };
  return new Promise((resolve, reject) => {
    const req = (target.url.protocol === 'https:' ? httpsRequest : httpRequest)(target.url, options, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < MAX_ANSWER) chunks.push(c.subarray(0, MAX_ANSWER - size));
        size += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
