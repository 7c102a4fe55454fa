import { randomBytes } from 'node:crypto';
import type { BlockList } from 'node:net';
import type { Knex } from 'knex';
import type { KeyManager, SigningAlg } from '../keys/key-manager.js';
import { decryptPrivateKey, encryptPrivateKey } from '../keys/key-encryption.js';
import type { Logger } from '../log/logger.js';
import type { OutboxRow, SsfRepo, StreamRecord, StreamStatus } from '../storage/ssf-repo.js';
import { REQUESTABLE_EVENTS, STREAM_UPDATED, VERIFICATION, signSecurityEvent, streamSubject, subjectKey } from '../tokens/security-event.js';
import { PUSH_METHOD, PushWorker, type PushOptions } from './push.js';
import { allowList, LookupGate, resolvePushTarget, systemLookup, type Lookup, type PushRefusal, type PushTarget } from './push-target.js';
import { newJti, SignalEmitter } from './signals.js';
import {
  addSubjectSchema, changeSchema, createSchema, parse, POLL_METHOD, pollSchema, pushEndpointRefusal, removeSubjectSchema, statusSchema,
  StreamError, streamView, verifySchema, maskAuthorization, type HttpPolicy,
} from './stream-config.js';

export interface TransmitterOptions {
  push: PushOptions;
  allowHttp: HttpPolicy;
  /** Internal addresses push endpoints may resolve to nonetheless (`SSF_PUSH_ALLOW_ADDRESSES`). */
  allowAddresses?: readonly string[];
  /** Resolves push endpoint hosts (the system resolver unless given). */
  lookup?: Lookup;
  /** Longest a poll request without `returnImmediately` waits for events (ms). */
  pollMaxWaitMs: number;
  maxStreamsPerClient: number;
  /**
   * Fewest seconds between two verification requests of a stream (SSF `min_verification_interval`,
   * `SSF_MIN_VERIFICATION_INTERVAL`); 0 for no limit.
   */
  minVerificationInterval?: number;
  /** Encrypts push authorization headers at rest (AES-256-GCM) when set: `AGENT_STS_KEY_ENCRYPTION_KEY`. */
  encryptionKey?: Buffer | undefined;
  /** The only server using its database (the embedded one): leases left by an earlier run are dropped at start. */
  exclusiveDatabase?: boolean;
}

const SEALED = 'aes256gcm-v1.';

export const SSF_PATHS = {
  configuration: '/.well-known/ssf-configuration',
  streams: '/ssf/streams',
  status: '/ssf/status',
  addSubject: '/ssf/subjects/add',
  removeSubject: '/ssf/subjects/remove',
  verify: '/ssf/verify',
  poll: '/ssf/poll',
} as const;

/**
 * Push endpoint lookups: the stream API's and the deliveries' have separate turns, so requests to the API can never
 * hold up a delivery. The API makes one lookup per client at a time (a second is refused while the first runs);
 * deliveries look up one at a time per client too, the others waiting their turn.
 */
const API_LOOKUPS = { running: 4, waiting: 50, sameKey: 'refuse' } as const;
const DELIVERY_LOOKUPS = { running: 16, waiting: 1000, sameKey: 'wait' } as const;

/** Default poll batch (RFC 8936 leaves it to the transmitter when `maxEvents` is absent). */
const DEFAULT_MAX_EVENTS = 100;
/** Verification requests a stream may make in a row before `min_verification_interval` applies. */
const VERIFICATION_BURST = 5;
/** Streams whose verification requests one server remembers; beyond that, those that have waited a full burst are forgotten. */
const VERIFICATION_STREAMS = 10_000;
/** Delivered and refused events stay in the outbox this long (for inspection), then are deleted. */
const KEEP_DONE_MS = 7 * 86_400_000;
const PRUNE_EVERY_MS = 3_600_000;
/** A waiting poll looks at the outbox at least this often (ms). */
const POLL_RECHECK_MS = 1000;

/**
 * The Shared Signals (SSF 1.0) transmitter: streams owned by the clients that create them, an outbox
 * written with the changes that cause events, push delivery (RFC 8935) and poll delivery (RFC 8936).
 */
export class Transmitter {
  readonly signals: SignalEmitter;
  private readonly push: PushWorker;
  private readonly waiters = new Set<() => void>();
  private stopped = false;
  private pruner: NodeJS.Timeout | undefined;
  private readonly allowed: BlockList;
  private readonly apiLookups = new LookupGate(API_LOOKUPS);
  private readonly deliveryLookups = new LookupGate(DELIVERY_LOOKUPS);
  /** Verification requests each stream may still make now (`tokens`), as of `at` (ms). */
  private readonly verifications = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly deps: {
    issuer: string; db: Knex; repo: SsfRepo; keys: KeyManager; signingAlg: SigningAlg; now: () => number; logger: Logger; opts: TransmitterOptions;
  }) {
    this.allowed = allowList(deps.opts.allowAddresses ?? []);
    this.signals = new SignalEmitter({ issuer: deps.issuer, repo: deps.repo, now: deps.now, committed: () => this.wake() });
    this.push = new PushWorker({
      repo: deps.repo, opts: deps.opts.push, logger: deps.logger,
      sign: (stream, row) => this.sign(stream, row),
      target: (url, stream) => this.pushTarget(url, stream.client_id, this.deliveryLookups),
      pause: (stream, reason) => this.changeStatus(stream, 'paused', reason, true).then(() => {}),
      authorization: (stream) => this.openHeader(stream),
    });
  }

  /** The authorization header as stored: encrypted, bound to its stream, when an encryption key is set. */
  private sealHeader(streamId: string, value: string | null): string | null {
    const key = this.deps.opts.encryptionKey;
    return value === null || !key ? value : encryptPrivateKey(value, key, `ssf-stream:${streamId}`);
  }

  private openHeader(stream: StreamRecord): string | null {
    const stored = stream.authorization_header;
    if (stored === null || !stored.startsWith(SEALED)) return stored;
    const key = this.deps.opts.encryptionKey;
    if (!key) throw new Error('the authorization header is encrypted: set AGENT_STS_KEY_ENCRYPTION_KEY to the key it was encrypted with');
    return decryptPrivateKey(stored, key, `ssf-stream:${stream.stream_id}`);
  }

  /** The SSF transmitter configuration metadata (`/.well-known/ssf-configuration`). */
  configuration(): Record<string, unknown> {
    const base = this.deps.issuer;
    return {
      spec_version: '1_0',
      issuer: base,
      jwks_uri: `${base}/jwks`,
      delivery_methods_supported: [PUSH_METHOD, POLL_METHOD],
      configuration_endpoint: `${base}${SSF_PATHS.streams}`,
      status_endpoint: `${base}${SSF_PATHS.status}`,
      add_subject_endpoint: `${base}${SSF_PATHS.addSubject}`,
      remove_subject_endpoint: `${base}${SSF_PATHS.removeSubject}`,
      verification_endpoint: `${base}${SSF_PATHS.verify}`,
      authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }],
      default_subjects: 'ALL',
    };
  }

  async start(): Promise<void> {
    if (this.deps.opts.exclusiveDatabase) await this.deps.repo.releaseAllLeases();
    this.push.wake();
    const prune = () => void this.deps.repo.prune(new Date(Date.now() - KEEP_DONE_MS))
      .catch((err: Error) => this.deps.logger.warn({ err: { message: err.message } }, 'pruning the events outbox failed'));
    this.pruner = setInterval(prune, PRUNE_EVERY_MS);
    this.pruner.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.pruner) clearInterval(this.pruner);
    for (const w of this.waiters) w();
    await this.push.stop();
  }

  /** New events were committed: push them and answer waiting polls. */
  wake(): void {
    this.push.wake();
    for (const w of [...this.waiters]) w();
  }

  private pollUrl = (id: string) => `${this.deps.issuer}${SSF_PATHS.poll}/${encodeURIComponent(id)}`;
  private view = (s: StreamRecord) => {
    let authorization: string | null;
    try {
      authorization = this.openHeader(s);
    } catch {
      authorization = '****';
    }
    return streamView(s, authorization, this.deps.issuer, this.pollUrl, this.deps.opts.minVerificationInterval ?? 0);
  };

  private async sign(stream: StreamRecord, row: OutboxRow): Promise<string> {
    return signSecurityEvent({
      iss: this.deps.issuer, jti: row.jti, iat: row.iat, aud: stream.aud, subId: row.sub_id, eventType: row.event_type, event: row.event,
    }, await this.deps.keys.signer(this.deps.signingAlg));
  }

  /**
   * A push endpoint checked: its URL against the configured rules, then every address its host resolves to
   * (public, or allowed by `SSF_PUSH_ALLOW_ADDRESSES`); the address to connect to, or why it may not be used.
   */
  private async pushTarget(url: string, clientId: string, gate: LookupGate): Promise<PushTarget | PushRefusal | { refused: string; detail?: undefined }> {
    const refused = pushEndpointRefusal(url, this.deps.opts.allowHttp);
    if (refused) return { refused };
    const lookup: Lookup = this.deps.opts.lookup ?? systemLookup;
    const timeoutMs = this.deps.opts.push.timeoutMs;
    // Waiting for a turn and the lookup are each bounded by the push timeout.
    return resolvePushTarget(new URL(url), this.allowed, (host) => gate.run(clientId, timeoutMs, timeoutMs, (signal) => lookup(host, signal)));
  }

  /** The delivery a request asks for, checked. */
  private async delivery(clientId: string, d: { method: string; endpoint_url?: string | undefined; authorization_header?: string | undefined } | undefined, current?: StreamRecord, newId?: string) {
    const method = d?.method ?? POLL_METHOD;
    if (method === POLL_METHOD) {
      // The poll endpoint is the transmitter's; a receiver may send back the one it was given.
      if (d?.endpoint_url !== undefined && (!current || d.endpoint_url !== this.pollUrl(current.stream_id))) {
        throw new StreamError(400, 'invalid_request', 'delivery.endpoint_url: the poll endpoint is assigned by the transmitter; leave it out');
      }
      if (d?.authorization_header !== undefined) throw new StreamError(400, 'invalid_request', 'delivery.authorization_header applies to push delivery only');
      return { delivery_method: POLL_METHOD, endpoint_url: null, authorization_header: null };
    }
    if (!d?.endpoint_url) throw new StreamError(400, 'invalid_request', 'delivery.endpoint_url is required for push delivery');
    const target = await this.pushTarget(d.endpoint_url, clientId, this.apiLookups);
    if ('refused' in target) {
      if ('busy' in target && target.busy === 'client') throw new StreamError(429, 'temporarily_unavailable', 'another push endpoint of this client is being checked; try again once it is answered');
      if ('busy' in target && target.busy === 'server') throw new StreamError(503, 'temporarily_unavailable', 'too many push endpoints are being checked; try again later');
      // The host only: a URL's path or query may carry a receiver's secret.
      if (target.detail) this.deps.logger.info({ host: URL.parse(d.endpoint_url)?.host, reason: target.detail }, 'push endpoint refused');
      throw new StreamError(400, 'invalid_request', `delivery.${target.refused}`);
    }
    let auth = d.authorization_header ?? null;
    // The masked value a receiver read back keeps the stored secret.
    if (auth !== null && current?.authorization_header) {
      const clear = this.openHeaderOrUndefined(current);
      if (clear !== undefined && auth === maskAuthorization(clear ?? '')) return { delivery_method: PUSH_METHOD, endpoint_url: d.endpoint_url, authorization_header: current.authorization_header };
    }
    return { delivery_method: PUSH_METHOD, endpoint_url: d.endpoint_url, authorization_header: auth === null ? null : this.sealHeader(current?.stream_id ?? newId!, auth) };
  }

  private openHeaderOrUndefined(s: StreamRecord): string | null | undefined {
    try {
      return this.openHeader(s);
    } catch {
      return undefined;
    }
  }

  private async owned(clientId: string, streamId: string): Promise<StreamRecord> {
    const stream = await this.deps.repo.findStream(streamId);
    // Another client's stream is not found: its existence is not disclosed.
    if (!stream || stream.client_id !== clientId) throw new StreamError(404, 'not_found', 'stream not found');
    return stream;
  }

  async create(clientId: string, body: unknown): Promise<Record<string, unknown>> {
    const req = parse(createSchema, body);
    const streamId = randomBytes(16).toString('base64url');
    const delivery = await this.delivery(clientId, req.delivery, undefined, streamId);
    if ((await this.deps.repo.countStreamsOf(clientId)) >= this.deps.opts.maxStreamsPerClient) {
      throw new StreamError(409, 'conflict', `this client already has ${this.deps.opts.maxStreamsPerClient} streams, the most it may have`);
    }
    const stream = await this.deps.repo.createStream({
      stream_id: streamId,
      client_id: clientId,
      aud: clientId,
      ...delivery,
      events_requested: req.events_requested ?? [...REQUESTABLE_EVENTS],
      description: req.description ?? null,
    });
    this.deps.logger.info({ stream_id: stream.stream_id, client_id: clientId, method: stream.delivery_method }, 'event stream created');
    return this.view(stream);
  }

  async read(clientId: string, streamId: string | undefined): Promise<Record<string, unknown> | Record<string, unknown>[]> {
    if (streamId === undefined) return (await this.deps.repo.streamsOf(clientId)).map(this.view);
    return this.view(await this.owned(clientId, streamId));
  }

  /** PATCH changes the receiver-supplied members given; PUT replaces them all (absent ones get their defaults). */
  async update(clientId: string, body: unknown, replace: boolean): Promise<Record<string, unknown>> {
    const req = parse(changeSchema, body);
    const current = await this.owned(clientId, req.stream_id);
    const fields = {
      ...(replace || req.delivery ? await this.delivery(clientId, req.delivery, current) : {}),
      ...(replace || req.events_requested ? { events_requested: req.events_requested ?? [...REQUESTABLE_EVENTS] } : {}),
      ...(replace || req.description !== undefined ? { description: req.description ?? null } : {}),
    };
    const updated = await this.deps.repo.updateStream(current.stream_id, fields);
    if (!updated) throw new StreamError(404, 'not_found', 'stream not found');
    this.wake();
    return this.view(updated);
  }

  async remove(clientId: string, streamId: string): Promise<void> {
    const stream = await this.owned(clientId, streamId);
    await this.deps.repo.deleteStream(stream.stream_id);
    this.deps.logger.info({ stream_id: stream.stream_id, client_id: clientId }, 'event stream deleted');
  }

  async status(clientId: string, streamId: string): Promise<Record<string, unknown>> {
    const s = await this.owned(clientId, streamId);
    return { stream_id: s.stream_id, status: s.status, ...(s.status_reason ? { reason: s.status_reason } : {}) };
  }

  async setStatus(clientId: string, body: unknown): Promise<Record<string, unknown>> {
    const req = parse(statusSchema, body);
    const s = await this.changeStatus(await this.owned(clientId, req.stream_id), req.status, req.reason ?? null, false);
    return { stream_id: s.stream_id, status: s.status, ...(s.status_reason ? { reason: s.status_reason } : {}) };
  }

  /**
   * Changes a stream's status. Unless it is now disabled (a disabled stream holds no events), its receiver
   * gets a stream-updated event after the events already queued.
   */
  private async changeStatus(stream: StreamRecord, status: StreamStatus, reason: string | null, byTransmitter: boolean): Promise<StreamRecord> {
    const updated = await this.deps.db.transaction(async (trx) => {
      const before = await this.deps.repo.findStream(stream.stream_id, trx);
      if (!before) throw new StreamError(404, 'not_found', 'stream not found');
      const after = (await this.deps.repo.setStatus(stream.stream_id, status, reason, trx))!;
      if (before.status !== status && status !== 'disabled') {
        const at = this.deps.now();
        await this.deps.repo.enqueue(trx, stream.stream_id, {
          jti: newJti(), event_type: STREAM_UPDATED, sub_id: streamSubject(stream.stream_id), iat: at,
          event: { status, ...(reason ? { reason } : {}) },
        });
      }
      return after;
    });
    if (!byTransmitter) this.deps.logger.info({ stream_id: stream.stream_id, status }, 'event stream status changed');
    this.wake();
    return updated;
  }

  /** Re-includes a subject removed before (every subject is included by default). */
  async addSubject(clientId: string, body: unknown): Promise<void> {
    const req = parse(addSubjectSchema, body);
    const stream = await this.owned(clientId, req.stream_id);
    const key = subjectKey(req.subject);
    if (stream.excluded_subjects.includes(key)) {
      await this.deps.repo.updateStream(stream.stream_id, { excluded_subjects: stream.excluded_subjects.filter((k) => k !== key) });
    }
  }

  /** Stops events about a subject (and, for an agent, about its tokens) on this stream. */
  async removeSubject(clientId: string, body: unknown): Promise<void> {
    const req = parse(removeSubjectSchema, body);
    const stream = await this.owned(clientId, req.stream_id);
    const key = subjectKey(req.subject);
    if (stream.excluded_subjects.includes(key)) return;
    if (stream.excluded_subjects.length >= 1000) throw new StreamError(400, 'invalid_request', 'a stream may exclude at most 1000 subjects');
    await this.deps.repo.updateStream(stream.stream_id, { excluded_subjects: [...stream.excluded_subjects, key] });
  }

  /**
   * SSF 1.0 `min_verification_interval`: a stream may ask for a verification event once per interval, with
   * bursts of up to VERIFICATION_BURST (a token bucket per stream, in this server's memory); more often gets
   * 429 with the seconds until the next one may be asked. A receiver that keeps to the interval is never refused.
   */
  private takeVerificationTurn(streamId: string): void {
    const intervalMs = (this.deps.opts.minVerificationInterval ?? 0) * 1000;
    if (intervalMs <= 0) return;
    const now = Date.now();
    const full = (b: { tokens: number; at: number }) => Math.min(VERIFICATION_BURST, b.tokens + (now - b.at) / intervalMs);
    const bucket = this.verifications.get(streamId);
    const tokens = bucket ? full(bucket) : VERIFICATION_BURST;
    if (tokens < 1) {
      throw new StreamError(429, 'temporarily_unavailable',
        `this stream may ask for a verification once every ${intervalMs / 1000} s (min_verification_interval)`, Math.max(1, Math.ceil(((1 - tokens) * intervalMs) / 1000)));
    }
    if (!bucket && this.verifications.size >= VERIFICATION_STREAMS) {
      for (const [id, b] of this.verifications) if (full(b) >= VERIFICATION_BURST) this.verifications.delete(id);
    }
    this.verifications.set(streamId, { tokens: tokens - 1, at: now });
  }

  /** Queues a verification event for the stream (SSF 1.0 §8.1.4). */
  async verify(clientId: string, body: unknown): Promise<void> {
    const req = parse(verifySchema, body);
    const stream = await this.owned(clientId, req.stream_id);
    this.takeVerificationTurn(stream.stream_id);
    // A disabled stream holds no events.
    if (stream.status === 'disabled') return;
    const at = this.deps.now();
    await this.deps.db.transaction(async (trx) => {
      await this.deps.repo.enqueue(trx, stream.stream_id, {
        jti: newJti(), event_type: VERIFICATION, sub_id: streamSubject(stream.stream_id), iat: at, event: req.state !== undefined ? { state: req.state } : {},
      });
    });
    this.wake();
  }

  /**
   * RFC 8936 poll: acknowledges and records errors first, then returns up to `maxEvents` pending SETs,
   * waiting up to the configured time for one when none is pending and `returnImmediately` is not true.
   * Events not acknowledged are returned again by later polls.
   */
  async poll(clientId: string, streamId: string, body: unknown): Promise<{ sets: Record<string, string>; moreAvailable: boolean }> {
    const req = parse(pollSchema, body);
    let stream = await this.owned(clientId, streamId);
    if (stream.delivery_method !== POLL_METHOD) throw new StreamError(400, 'invalid_request', 'this stream is delivered by push, not poll');
    await this.deps.repo.acknowledge(stream.stream_id, req.ack ?? [], req.setErrs ?? {});
    const max = req.maxEvents ?? DEFAULT_MAX_EVENTS;
    const deadline = Date.now() + this.deps.opts.pollMaxWaitMs;
    let rows: OutboxRow[] = [];
    for (;;) {
      rows = max > 0 && stream.status === 'enabled' ? await this.deps.repo.pending(stream.stream_id, max + 1) : [];
      if (rows.length || max === 0 || req.returnImmediately || this.stopped || Date.now() >= deadline) break;
      // Woken when this server commits an event; events committed by other servers are seen within a second.
      await this.waitForEvents(Math.min(deadline - Date.now(), POLL_RECHECK_MS));
      const again = await this.deps.repo.findStream(stream.stream_id);
      if (!again) break;
      stream = again;
    }
    const sets: Record<string, string> = {};
    for (const row of rows.slice(0, max)) sets[row.jti] = await this.sign(stream, row);
    return { sets, moreAvailable: rows.length > max };
  }

  private waitForEvents(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, Math.max(0, ms));
      this.waiters.add(done);
    });
  }

  /** Events not yet delivered, over all streams. */
  backlog(): Promise<number> {
    return this.deps.repo.backlog();
  }
}
