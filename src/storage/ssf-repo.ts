import type { Knex } from 'knex';
import { hasNul, storableText } from './text.js';
import type { SsfReceiverPolicy } from './agents-repo.js';

export type StreamStatus = 'enabled' | 'paused' | 'disabled';

export interface StreamRecord {
  stream_id: string;
  client_id: string;
  aud: string;
  delivery_method: string;
  endpoint_url: string | null;
  /** A secret: stored to send it, never shown in full or logged. */
  authorization_header: string | null;
  events_requested: string[];
  description: string | null;
  status: StreamStatus;
  status_reason: string | null;
  /** Keys of the subjects removed from the stream (see `subjectKey`). */
  excluded_subjects: string[];
  created_at: string;
  updated_at: string;
}

export type StreamFields = Pick<StreamRecord, 'delivery_method' | 'endpoint_url' | 'authorization_header' | 'events_requested' | 'description'>;

/** One event for one stream, as written to the outbox. */
export interface OutboxEvent {
  jti: string;
  event_type: string;
  sub_id: Record<string, string>;
  event: Record<string, unknown>;
  iat: number;
}

export interface OutboxRow extends OutboxEvent {
  id: number;
  stream_id: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  first_failure_at: number | null;
  last_error: string | null;
}

/**
 * Which receivers have a stake in an event: every receiver (`everyone`), the agents it is about (and the
 * receivers following them), and the receivers whose id is one of `audiences` or that serve one of them.
 */
export interface Stake {
  everyone?: boolean;
  agents: string[];
  audiences: string[];
}

/**
 * An event to fan out to every stream that wants it. `subjects` are the subject keys it concerns (for
 * exclusions); `stake` says whose streams may carry it.
 */
export interface FanOutEvent {
  event_type: string;
  sub_id: Record<string, string>;
  event: Record<string, unknown>;
  iat: number;
  subjects: string[];
  stake: Stake;
}

/** A stream with its owner's receiver policy, as fan-out sees it. */
export type FanOutStream = StreamRecord & { owner_ssf: SsfReceiverPolicy };

/** Whether a stream's owner has a stake in an event (see `SsfReceiverPolicy`). */
export function hasStake(stream: FanOutStream, stake: Stake): boolean {
  const owner = stream.client_id;
  const policy = stream.owner_ssf ?? {};
  if (stake.everyone || policy.all_subjects === true) return true;
  if (stake.agents.includes(owner) || stake.agents.some((a) => policy.follows?.includes(a))) return true;
  return stake.audiences.some((a) => a === owner || !!policy.resources?.includes(a));
}

function streamFromRow(row: Record<string, unknown>): StreamRecord {
  return {
    ...(row as unknown as StreamRecord),
    created_at: new Date(row.created_at as string).toISOString(),
    updated_at: new Date(row.updated_at as string).toISOString(),
  };
}

function outboxFromRow(row: Record<string, unknown>): OutboxRow {
  return {
    ...(row as unknown as OutboxRow),
    id: Number(row.id),
    iat: Number(row.iat),
    first_failure_at: row.first_failure_at === null ? null : Number(row.first_failure_at),
  };
}

/** Streams and the events outbox of the Shared Signals transmitter. */
export class SsfRepo {
  constructor(private readonly db: Knex) {}

  async createStream(stream: Omit<StreamRecord, 'status' | 'status_reason' | 'excluded_subjects' | 'created_at' | 'updated_at'>): Promise<StreamRecord> {
    const rows = await this.db('ssf_streams').insert({ ...stream, events_requested: JSON.stringify(stream.events_requested) }).returning('*');
    return streamFromRow(rows[0]);
  }

  async findStream(streamId: string, trx: Knex = this.db): Promise<StreamRecord | undefined> {
    if (hasNul(streamId)) return undefined;
    const row = await trx('ssf_streams').where({ stream_id: streamId }).first();
    return row ? streamFromRow(row) : undefined;
  }

  async streamsOf(clientId: string): Promise<StreamRecord[]> {
    return (await this.db('ssf_streams').where({ client_id: clientId }).orderBy('created_at')).map(streamFromRow);
  }

  async countStreamsOf(clientId: string): Promise<number> {
    const row = await this.db('ssf_streams').where({ client_id: clientId }).count<{ n: number | string }[]>('* as n').first();
    return Number(row?.n ?? 0);
  }

  async updateStream(streamId: string, fields: Partial<StreamFields & Pick<StreamRecord, 'excluded_subjects'>>, trx: Knex = this.db): Promise<StreamRecord | undefined> {
    const row: Record<string, unknown> = { ...fields, updated_at: trx.fn.now() };
    // A new delivery is tried at once, not after the back-off of the old one.
    if (fields.delivery_method !== undefined || fields.endpoint_url !== undefined) row.retry_at = 0;
    if (fields.events_requested) row.events_requested = JSON.stringify(fields.events_requested);
    if (fields.excluded_subjects) row.excluded_subjects = JSON.stringify(fields.excluded_subjects);
    const rows = await trx('ssf_streams').where({ stream_id: streamId }).update(row).returning('*');
    return rows[0] ? streamFromRow(rows[0]) : undefined;
  }

  /**
   * Sets a stream's status. Disabling drops the events it holds (SSF: a disabled stream holds none);
   * enabling makes held and failing events due at once.
   */
  async setStatus(streamId: string, status: StreamStatus, reason: string | null, trx: Knex): Promise<StreamRecord | undefined> {
    const rows = await trx('ssf_streams').where({ stream_id: streamId })
      .update({ status, status_reason: reason, updated_at: trx.fn.now(), ...(status !== 'enabled' ? {} : { retry_at: 0 }) }).returning('*');
    if (!rows[0]) return undefined;
    if (status === 'disabled') await trx('ssf_outbox').where({ stream_id: streamId, state: 'pending' }).delete();
    if (status === 'enabled') await trx('ssf_outbox').where({ stream_id: streamId, state: 'pending' }).whereNotNull('first_failure_at').update({ first_failure_at: null });
    return streamFromRow(rows[0]);
  }

  async deleteStream(streamId: string): Promise<void> {
    await this.db('ssf_streams').where({ stream_id: streamId }).delete();
  }

  /**
   * Writes an event to the outbox of every stream not disabled, of an active client with a stake in it
   * (`hasStake`), whose receiver asked for its type and has not removed one of its subjects. Runs in the
   * caller's transaction. Returns how many rows were written.
   */
  async fanOut(trx: Knex, events: FanOutEvent[], jti: () => string, wanted: (stream: StreamRecord, eventType: string) => boolean): Promise<number> {
    if (!events.length) return 0;
    // Streams of receivers whose agent is disabled get no new events.
    const streams = (await trx('ssf_streams').join('agents', 'agents.id', 'ssf_streams.client_id')
      .whereNot('ssf_streams.status', 'disabled').andWhere('agents.status', 'active')
      .select('ssf_streams.*', 'agents.ssf as owner_ssf')
      .orderBy('ssf_streams.stream_id')).map((row: Record<string, unknown>) => ({ ...streamFromRow(row), owner_ssf: (row.owner_ssf ?? {}) as SsfReceiverPolicy }));
    const rows: Record<string, unknown>[] = [];
    for (const e of events) {
      for (const s of streams) {
        if (!wanted(s, e.event_type) || !hasStake(s, e.stake) || e.subjects.some((k) => s.excluded_subjects.includes(k))) continue;
        rows.push({ stream_id: s.stream_id, jti: jti(), event_type: e.event_type, sub_id: JSON.stringify(e.sub_id), event: JSON.stringify(e.event), iat: e.iat });
      }
    }
    for (let i = 0; i < rows.length; i += 500) await trx('ssf_outbox').insert(rows.slice(i, i + 500));
    return rows.length;
  }

  /** Writes one event for one stream (verification, stream-updated). */
  async enqueue(trx: Knex, streamId: string, event: OutboxEvent): Promise<void> {
    await trx('ssf_outbox').insert({ stream_id: streamId, ...event, sub_id: JSON.stringify(event.sub_id), event: JSON.stringify(event.event) });
  }

  /**
   * Leases push streams that have due events and no live lease, so one server delivers a stream at a time
   * (`for update skip locked`: servers sharing the database never claim the same stream): up to `limit`
   * streams, those waiting longest (`retry_at`, moved to the end of a turn) first.
   */
  async claimDueStreams(method: string, owner: string, nowMs: number, leaseMs: number, limit = 50): Promise<StreamRecord[]> {
    const result = await this.db.raw(
      `update ssf_streams set lease_owner = ?, lease_until = ?
       where stream_id in (
         select s.stream_id from ssf_streams s
         where s.status = 'enabled' and s.delivery_method = ? and (s.lease_until is null or s.lease_until < ?) and s.retry_at <= ?
           and exists (select 1 from ssf_outbox o where o.stream_id = s.stream_id and o.state = 'pending')
         order by s.retry_at
         limit ?
         for update of s skip locked
       ) returning *`, [owner, nowMs + leaseMs, method, nowMs, nowMs, Math.max(1, Math.floor(limit))]);
    return result.rows.map(streamFromRow);
  }

  /** Extends a lease this owner holds; false when it lost it. */
  async renewLease(streamId: string, owner: string, untilMs: number): Promise<boolean> {
    const n = await this.db('ssf_streams').where({ stream_id: streamId, lease_owner: owner }).update({ lease_until: untilMs });
    return n > 0;
  }

  /** Drops every lease (a server that is the only one using its database, at start). */
  async releaseAllLeases(): Promise<void> {
    await this.db('ssf_streams').whereNotNull('lease_owner').update({ lease_owner: null, lease_until: null });
  }

  async releaseLease(streamId: string, owner: string): Promise<void> {
    await this.db('ssf_streams').where({ stream_id: streamId, lease_owner: owner }).update({ lease_owner: null, lease_until: null });
  }

  /** The oldest pending events of a stream, in order. */
  async pending(streamId: string, limit: number): Promise<OutboxRow[]> {
    return (await this.db('ssf_outbox').where({ stream_id: streamId, state: 'pending' }).orderBy('id').limit(limit)).map(outboxFromRow);
  }

  async hasMorePending(streamId: string, afterId: number): Promise<boolean> {
    return !!(await this.db('ssf_outbox').where({ stream_id: streamId, state: 'pending' }).andWhere('id', '>', afterId).first('id'));
  }

  /**
   * When an enabled stream of this method with pending events is next due (ms), if any: its retry time, or the
   * end of the lease a server holds on it (that server wakes when it is done with it; a server that died holding it
   * is taken over then).
   */
  async nextDue(method: string): Promise<number | undefined> {
    const row = await this.db('ssf_streams as s').where({ 's.status': 'enabled', 's.delivery_method': method })
      .whereExists((q) => q.select(this.db.raw('1')).from('ssf_outbox as o').whereRaw('o.stream_id = s.stream_id').andWhere('o.state', 'pending'))
      .first<{ due: number | string | null } | undefined>(this.db.raw('min(greatest(s.retry_at, coalesce(s.lease_until, 0))) as due'));
    return row?.due === null || row?.due === undefined ? undefined : Number(row.due);
  }

  /** Holds a stream's deliveries until `atMs` (a retry after a failure). */
  async retryStreamAt(streamId: string, atMs: number): Promise<void> {
    await this.db('ssf_streams').where({ stream_id: streamId }).update({ retry_at: atMs });
  }

  async markDelivered(id: number): Promise<void> {
    await this.db('ssf_outbox').where({ id, state: 'pending' }).update({ state: 'delivered', delivered_at: this.db.fn.now(), attempts: this.db.raw('attempts + 1') });
  }

  async markFailed(id: number, error: string): Promise<void> {
    await this.db('ssf_outbox').where({ id, state: 'pending' }).update({ state: 'failed', last_error: error.slice(0, 500), attempts: this.db.raw('attempts + 1') });
  }

  /** Records a failed attempt; returns when the failures of this event began (ms). */
  async markRetry(id: number, nowMs: number, error: string): Promise<number> {
    const rows = await this.db('ssf_outbox').where({ id })
      .update({ attempts: this.db.raw('attempts + 1'), first_failure_at: this.db.raw('coalesce(first_failure_at, ?)', [nowMs]), last_error: error.slice(0, 500) })
      .returning('first_failure_at');
    return Number(rows[0]?.first_failure_at ?? nowMs);
  }

  /** Poll delivery: acknowledges events (never delivered again) and records the receiver's errors for others. */
  async acknowledge(streamId: string, acks: string[], errs: Record<string, { err: string; description?: string }>): Promise<void> {
    // Identifiers holding U+0000 name no event (PostgreSQL could not even compare them).
    acks = acks.filter((jti) => !hasNul(jti));
    errs = Object.fromEntries(Object.entries(errs).filter(([jti]) => !hasNul(jti)));
    if (!acks.length && !Object.keys(errs).length) return;
    await this.db.transaction(async (trx) => {
      if (acks.length) await trx('ssf_outbox').where({ stream_id: streamId, state: 'pending' }).whereIn('jti', acks).update({ state: 'delivered', delivered_at: trx.fn.now() });
      for (const [jti, e] of Object.entries(errs)) {
        await trx('ssf_outbox').where({ stream_id: streamId, state: 'pending', jti }).update({ state: 'failed', last_error: storableText(`${e.err}: ${e.description ?? ''}`.slice(0, 500)) });
      }
    });
  }

  /** Deletes delivered and refused events recorded before `before`; returns how many. */
  async prune(before: Date): Promise<number> {
    return this.db('ssf_outbox').whereNot({ state: 'pending' }).andWhere('created_at', '<', before).delete();
  }

  /** Events not yet delivered (pending), over every stream: the outbox backlog. */
  async backlog(): Promise<number> {
    const row = await this.db('ssf_outbox').where({ state: 'pending' }).count<{ n: number | string }[]>('* as n').first();
    return Number(row?.n ?? 0);
  }
}
