import { randomId } from '../tokens/random-id.js';
import type { Knex } from 'knex';
import type { CredentialChange, InitiatingEntity, RevokedToken, SecuritySignals } from '../storage/security-signals.js';
import type { FanOutEvent, SsfRepo, Stake, StreamRecord } from '../storage/ssf-repo.js';
import {
  CREDENTIAL_CHANGE, CREDENTIAL_TYPE, REQUESTABLE_EVENTS, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE, subjectKey, tokenSubject, uriSubject,
} from '../tokens/security-event.js';

export const newJti = () => randomId(16);

/** A JSON audience column as read back: an array of strings (or its JSON text). */
function audienceList(v: unknown): string[] {
  const list = typeof v === 'string' ? (() => { try { return JSON.parse(v) as unknown; } catch { return [v]; } })() : v;
  return Array.isArray(list) ? list.filter((a): a is string => typeof a === 'string') : typeof list === 'string' ? [list] : [];
}

/** The event types a stream's receiver gets: what it asked for that we send. */
export function eventsDelivered(stream: Pick<StreamRecord, 'events_requested'>): string[] {
  return REQUESTABLE_EVENTS.filter((t) => stream.events_requested.includes(t));
}

/**
 * Turns security-relevant changes into CAEP events in the outbox of every stream that wants them and whose
 * receiver has a stake in them, in the transaction of the change. Once that transaction commits,
 * `committed` wakes the deliveries.
 *
 * Stakes: a revoked token concerns the agent it was issued to, its subject, and its audiences; an event about
 * an agent (disabled, credentials or claims changed) concerns the agent and the audiences it may get tokens
 * for (for a claims change, before and after); the issuer's own key rotation concerns every receiver.
 */
export class SignalEmitter implements SecuritySignals {
  constructor(private readonly deps: { issuer: string; repo: SsfRepo; now: () => number; committed: () => void }) {}

  async tokensRevoked(trx: Knex, tokens: RevokedToken[], cause: { initiating_entity: InitiatingEntity; reason: string }): Promise<void> {
    const at = this.deps.now();
    const events: FanOutEvent[] = [];
    for (const t of tokens) {
      const direct = t.depth === 0;
      const sub = tokenSubject(this.deps.issuer, t.jti);
      events.push({
        event_type: SESSION_REVOKED, sub_id: sub, iat: at,
        subjects: [subjectKey(sub), subjectKey(uriSubject(t.client_id)), subjectKey(uriSubject(t.sub))],
        stake: { agents: [t.client_id, t.sub], audiences: audienceList(t.audience) },
        event: {
          event_timestamp: at,
          initiating_entity: direct ? cause.initiating_entity : 'policy',
          reason_admin: { en: direct ? cause.reason : `a token it was exchanged from was revoked (${cause.reason})` },
        },
      });
    }
    // A revoked WIT is a revoked credential of its agent.
    for (const agent of new Set(tokens.filter((t) => t.type === 'wit').map((t) => t.client_id))) {
      events.push(this.credentialEvent(agent, 'revoke', 'workload identity token revoked', at, await this.agentStake(trx, agent)));
    }
    await this.write(trx, events);
  }

  async agentRevoked(trx: Knex, agentId: string, reason: string): Promise<void> {
    const at = this.deps.now();
    const sub = uriSubject(agentId);
    const stake = await this.agentStake(trx, agentId);
    await this.write(trx, [
      { event_type: SESSION_REVOKED, sub_id: sub, iat: at, subjects: [subjectKey(sub)], stake, event: { event_timestamp: at, initiating_entity: 'admin', reason_admin: { en: reason } } },
      this.credentialEvent(agentId, 'revoke', reason, at, stake),
    ]);
  }

  async credentialChanged(trx: Knex, uri: string, change: CredentialChange, reason: string): Promise<void> {
    // The issuer's own keys concern every receiver; anything else is an agent's.
    const stake: Stake = uri === this.deps.issuer ? { everyone: true, agents: [], audiences: [] } : await this.agentStake(trx, uri);
    await this.write(trx, [this.credentialEvent(uri, change, reason, this.deps.now(), stake)]);
  }

  async claimsChanged(trx: Knex, agentId: string, claims: { scope: string; aud: string[] }, before: { aud: string[] }): Promise<void> {
    const at = this.deps.now();
    const sub = uriSubject(agentId);
    const stake: Stake = { agents: [agentId], audiences: [...new Set([...before.aud, ...claims.aud])] };
    await this.write(trx, [{ event_type: TOKEN_CLAIMS_CHANGE, sub_id: sub, iat: at, subjects: [subjectKey(sub)], stake, event: { event_timestamp: at, claims } }]);
  }

  /** An event about an agent concerns the agent and the audiences it may get tokens for. */
  private async agentStake(trx: Knex, agentId: string): Promise<Stake> {
    const row = await trx('agents').where({ id: agentId }).first('audiences') as { audiences: unknown } | undefined;
    return { agents: [agentId], audiences: audienceList(row?.audiences) };
  }

  private credentialEvent(uri: string, change: CredentialChange, reason: string, at: number, stake: Stake): FanOutEvent {
    const sub = uriSubject(uri);
    return {
      event_type: CREDENTIAL_CHANGE, sub_id: sub, iat: at, subjects: [subjectKey(sub)], stake,
      event: { event_timestamp: at, credential_type: CREDENTIAL_TYPE, change_type: change, initiating_entity: 'admin', reason_admin: { en: reason } },
    };
  }

  private async write(trx: Knex, events: FanOutEvent[]): Promise<void> {
    const n = await this.deps.repo.fanOut(trx, events, newJti, (s, type) => s.events_requested.includes(type));
    if (n) this.afterCommit(trx);
  }

  /** Wakes the deliveries once `trx` has committed (at once when it is not a transaction). */
  afterCommit(trx: Knex): void {
    const done = (trx as Knex.Transaction).executionPromise;
    if (done) done.then(() => this.deps.committed(), () => {});
    else queueMicrotask(() => this.deps.committed());
  }
}
