import type { IncomingMessage } from 'node:http';
import { isIP, isIPv4 } from 'node:net';
import type { Context, Next } from 'koa';
import type { Logger } from '../log/logger.js';
import type { DecisionEvent, EventsRepo } from '../storage/events-repo.js';
import { ignoreRecords, type RecordObserver } from '../storage/record-observer.js';
import { GRANT_TYPES } from '../identity/agent-registration.js';

export interface AnonymousRefusalSettings {
  /** Refusals a source may earn at once before it is throttled (0: never throttled). */
  burst: number;
  /** Refusals per minute a source earns back. */
  perMinute: number;
  /** Length of a counting interval (ms). */
  intervalMs: number;
  /** Refusals of one source recorded one by one in an interval; the rest are counted. */
  recordedPerInterval: number;
  /** Take the source from the last `X-Forwarded-For` entry (the address our proxy saw). */
  trustProxy: boolean;
}

/** Sources (and their counters) held per interval; refusals of sources beyond it are counted under `other`. */
const MAX_SOURCES_PER_INTERVAL = 10_000;
/** Refusals recorded one by one per interval over all sources (many sources at once are counted beyond it). */
const MAX_RECORDED_PER_INTERVAL = 1_000;
/** Counters held per interval (a source's refusals, by action and reason). */
const MAX_COUNTERS_PER_INTERVAL = 20_000;
/** Token buckets held; beyond it the least recently used one is dropped (full ones go when a request gives its token back and at each interval's end). */
const MAX_BUCKETS = 100_000;

/** The actions a counter is kept for; any other is counted as `token:other`, `client_auth:other` or `other`. */
const COUNTED_ACTIONS: ReadonlySet<string> = new Set([
  ...[...GRANT_TYPES, 'unknown'].map((g) => `token:${g}`),
  ...['/token', '/token/introspection', '/token/revocation', '/backchannel'].map((p) => `client_auth:${p}`),
  'introspection', 'revocation', 'backchannel_authentication', 'ssf', 'wit', 'approvals', 'approve.login', 'rate_limit',
]);
/** The reasons a counter is kept for (the error codes the server answers with); any other is counted as `other`. */
const COUNTED_REASONS: ReadonlySet<string> = new Set([
  'invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope',
  'invalid_target', 'invalid_token', 'insufficient_scope', 'access_denied', 'invalid_dpop_proof', 'use_dpop_nonce',
  'temporarily_unavailable', 'rate_limited', 'server_error', 'unsupported_token_type', 'invalid_authorization_details',
  'invalid_binding_message', 'unknown_user_id', 'expired_token', 'authorization_pending', 'slow_down', 'expired_login_hint_token',
  'login_required', 'invalid_request_object',
]);

/** The action of a counter: the event's when the server names it, else the family it belongs to. */
export function countedAction(action: string): string {
  if (COUNTED_ACTIONS.has(action)) return action;
  if (action.startsWith('token:')) return 'token:other';
  if (action.startsWith('client_auth:')) return 'client_auth:other';
  return 'other';
}

/** The reason of a counter: a known error code, else `other`. */
export function countedReason(reason: string | null | undefined): string | null {
  if (reason === null || reason === undefined) return null;
  return COUNTED_REASONS.has(reason) ? reason : 'other';
}

/** The address a request came from: IPv4 as is, IPv6 by its /64 (one host's usual allocation). */
export function sourceAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  const bare = address.replace(/%.*$/, '');
  if (bare.toLowerCase().startsWith('::ffff:') && isIPv4(bare.slice(7))) return bare.slice(7);
  if (isIP(bare) !== 6) return isIP(bare) === 4 ? bare : 'unknown';
  const [head = '', tail] = bare.toLowerCase().split('::');
  const groups = (s: string) => (s ? s.split(':') : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  // An embedded IPv4 address takes two groups (it is in the low 64 bits, never the prefix).
  const width = (g: string[]) => g.reduce((n, x) => n + (x.includes('.') ? 2 : 1), 0);
  const full = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - width(h) - width(t))).fill('0'), ...t];
  return `${full.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** The source of a request: the peer address, or with a trusted proxy the last `X-Forwarded-For` entry. */
export function requestSource(req: IncomingMessage, trustProxy: boolean): string {
  if (trustProxy) {
    const header = req.headers['x-forwarded-for'];
    const last = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map((s) => s.trim()).filter(Boolean).pop();
    if (last && isIP(last.replace(/%.*$/, ''))) return sourceAddress(last);
  }
  return sourceAddress(req.socket.remoteAddress);
}

interface Counted {
  source: string;
  action: string;
  reason: string | null;
  count: number;
  /** The first counted refusal: who it claimed to be and why it was refused. */
  first: { client_id: string | null; detail: string | null };
}

interface Interval {
  startMs: number;
  /** Refusals of each source so far in the interval. */
  perSource: Map<string, number>;
  /** Refusals recorded one by one in the interval, over all sources. */
  recorded: number;
  counted: Map<string, Counted>;
}

/**
 * Refusals of requests whose caller was not authenticated (a client that failed client authentication, a
 * missing or bad bearer token, a failed attestation). A caller nobody knows can send them without end, so:
 * - each source (client address) has a token bucket of refusals; an empty bucket answers 429 with
 *   `Retry-After` before any further work (scrypt, JWKS fetches, database reads);
 * - in each interval the first refusals of a source are recorded one by one as before; the rest are counted
 *   per (source, action, reason) and written at the interval's end as one `refused` event each, whose detail
 *   says how many, from where and when (see the README, "Metrics and audit export").
 * Refusals of authenticated callers are recorded one by one as always.
 */
export class AnonymousRefusals {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();
  /** Requests past the guard holding a token of their source's bucket (until refused or answered). */
  private readonly reserved = new WeakMap<IncomingMessage, string>();
  private interval: Interval;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly events: EventsRepo,
    private readonly settings: AnonymousRefusalSettings,
    private readonly logger: Logger,
    private readonly observer: RecordObserver = ignoreRecords,
    private readonly clock: () => number = Date.now,
  ) {
    this.interval = this.newInterval();
  }

  source(ctx: Pick<Context, 'req'>): string {
    return requestSource(ctx.req, this.settings.trustProxy);
  }

  /**
   * Answers 429 (`temporarily_unavailable`, with `Retry-After`) to a source whose refusals used up its
   * bucket, before the request reaches anything that authenticates it. A request let through holds one of the
   * bucket's tokens while it is answered: a refusal spends it, any other answer gives it back. So requests sent
   * at once get no more than the bucket holds past the guard. The throttled request is counted (action
   * `rate_limit`) but does not delay the bucket's refill.
   */
  guard() {
    return async (ctx: Context, next: Next): Promise<void> => {
      const source = this.source(ctx);
      const wait = this.reserve(source);
      if (wait === 0) {
        if (this.settings.burst === 0) return next();
        this.reserved.set(ctx.req, source);
        try {
          return await next();
        } finally {
          // Not refused (or refused by something that records no anonymous refusal): the token goes back.
          if (this.reserved.delete(ctx.req)) this.refund(source);
        }
      }
      ctx.status = 429;
      ctx.set('Retry-After', String(wait));
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'temporarily_unavailable', error_description: `too many refused requests from this address; retry after ${wait} s` };
      this.count(source, { decision: 'refused', action: 'rate_limit', reason: 'rate_limited', detail: `${ctx.method} ${ctx.path}`.slice(0, 300) }, true);
    };
  }

  /** Records the refusal of an unauthenticated request: one by one up to the source's share, counted after. */
  async refused(ctx: Pick<Context, 'req'>, event: DecisionEvent): Promise<void> {
    const source = this.source(ctx);
    // The token the guard reserved for the request is spent; a request that passed no guard takes one now.
    if (!this.reserved.delete(ctx.req)) this.take(source);
    if (this.count(source, event, false)) return;
    await this.events.record(event);
  }

  /** Writes the counts of the interval ending now and starts the next one. */
  flush(): Promise<void> {
    const ended = this.interval;
    this.interval = this.newInterval();
    this.sweepBuckets();
    if (!ended.counted.size) return this.flushing;
    const from = new Date(ended.startMs).toISOString();
    const to = new Date(this.interval.startMs).toISOString();
    const rows: DecisionEvent[] = [...ended.counted.values()].map((c) => ({
      decision: 'refused',
      action: c.action,
      client_id: null,
      reason: c.reason,
      detail: `count=${c.count} source=${c.source} from=${from} to=${to}; first: client_id=${c.first.client_id ?? '-'} ${c.first.detail ?? ''}`.trimEnd(),
    }));
    this.flushing = this.flushing.then(() => this.events.recordCounted(rows))
      .catch((err: Error) => this.logger.warn({ err: { message: err.message }, rows: rows.length }, 'counted refusals not recorded'));
    return this.flushing;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.settings.intervalMs);
    this.timer.unref();
  }

  /** Stops the interval timer and writes what was counted (waiting at most `waitMs` for the database). */
  async stop(waitMs = 2000): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise<void>((resolve) => { t = setTimeout(resolve, waitMs); })]);
    clearTimeout(t);
  }

  private newInterval(): Interval {
    return { startMs: this.clock(), perSource: new Map(), recorded: 0, counted: new Map() };
  }

  /**
   * Counts a refusal of `source` in this interval; true when it was counted rather than to be recorded on its
   * own. The observer (metrics) hears of every refusal either way.
   */
  private count(source: string, event: DecisionEvent, always: boolean): boolean {
    const { perSource, counted } = this.interval;
    let key = source;
    if (!perSource.has(key) && perSource.size >= MAX_SOURCES_PER_INTERVAL) key = 'other';
    const n = (perSource.get(key) ?? 0) + 1;
    perSource.set(key, n);
    if (!always && n <= this.settings.recordedPerInterval && this.interval.recorded < MAX_RECORDED_PER_INTERVAL) {
      this.interval.recorded++;
      return false;
    }
    this.observer.decisionRecorded(event);
    // Actions and reasons can carry request text (a grant type): counters are kept for known ones only.
    let action = countedAction(event.action);
    let reason = countedReason(event.reason);
    let id = `${key}\u0000${action}\u0000${reason ?? ''}`;
    if (!counted.has(id) && counted.size >= MAX_COUNTERS_PER_INTERVAL) {
      [action, reason] = ['other', null];
      id = `${key}\u0000other\u0000`;
    }
    const c = counted.get(id);
    if (c) c.count++;
    else {
      const named = [action === event.action ? '' : `action=${event.action.slice(0, 200)}`, reason === (event.reason ?? null) ? '' : `reason=${event.reason?.slice(0, 100)}`]
        .filter(Boolean).join(' ');
      counted.set(id, {
        source: key, action, reason, count: 1,
        first: { client_id: event.client_id?.slice(0, 200) ?? null, detail: `${named ? `${named} ` : ''}${event.detail?.slice(0, 200) ?? ''}` || null },
      });
    }
    return true;
  }

  /**
   * Takes a token of `source`'s bucket for a request about to be answered: 0 when there was one, else the
   * seconds until there will be.
   */
  private reserve(source: string): number {
    if (this.settings.burst === 0) return 0;
    const b = this.refill(source) ?? { tokens: this.settings.burst, atMs: this.clock() };
    if (b.tokens < 1) return Math.max(1, Math.ceil(((1 - b.tokens) * 60) / this.settings.perMinute));
    b.tokens -= 1;
    this.keep(source, b);
    return 0;
  }

  /** Gives back the token a request reserved that was not refused. */
  private refund(source: string): void {
    const b = this.refill(source);
    if (!b) return;
    b.tokens = Math.min(this.settings.burst, b.tokens + 1);
    if (b.tokens >= this.settings.burst) this.buckets.delete(source);
  }

  private take(source: string): void {
    if (this.settings.burst === 0) return;
    const b = this.refill(source) ?? { tokens: this.settings.burst, atMs: this.clock() };
    b.tokens = Math.max(0, b.tokens - 1);
    this.keep(source, b);
  }

  /** Holds `source`'s bucket as the most recently used one (dropping the least recently used one past the bound). */
  private keep(source: string, b: { tokens: number; atMs: number }): void {
    this.buckets.delete(source);
    this.buckets.set(source, b);
    if (this.buckets.size > MAX_BUCKETS) this.buckets.delete(this.buckets.keys().next().value!);
  }

  private refill(source: string): { tokens: number; atMs: number } | undefined {
    const b = this.buckets.get(source);
    if (!b) return undefined;
    const now = this.clock();
    b.tokens = Math.min(this.settings.burst, b.tokens + ((now - b.atMs) / 60_000) * this.settings.perMinute);
    b.atMs = now;
    return b;
  }

  /** Drops full buckets: a source without one is as good as full. */
  private sweepBuckets(): void {
    for (const source of [...this.buckets.keys()]) {
      const b = this.refill(source);
      if (b && b.tokens >= this.settings.burst) this.buckets.delete(source);
    }
  }
}
