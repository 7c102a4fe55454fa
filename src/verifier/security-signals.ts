/**
 * What a verifier has learnt from Shared Signals (CAEP) security events, and the tokens it therefore
 * refuses before their `exp`: revoked `jti`s, agents whose tokens were all revoked, agents whose
 * credentials changed (their earlier WITs) and agents whose scopes or audiences shrank (their earlier
 * tokens that now grant too much). A token is judged by its `iat` against the event's `event_timestamp`:
 * anything issued at or before that second is affected.
 */

import { CREDENTIAL_CHANGE, REQUESTABLE_EVENTS, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE } from '../tokens/security-event.js';

export { CREDENTIAL_CHANGE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE };

/** The CAEP events a verifier acts on. */
export const RECEIVED_EVENTS: string[] = [...REQUESTABLE_EVENTS];

/** An RFC 9493 subject identifier. */
export interface SubjectId {
  format: string;
  [member: string]: unknown;
}

/** A verified Security Event Token: its one event, and whom it is about. */
export interface SecurityEvent {
  jti: string;
  iat: number;
  /** The event type URI. */
  type: string;
  subject: SubjectId;
  /** The event's own members (`event_timestamp`, `change_type`, `claims`, ...). */
  event: Record<string, unknown>;
}

/** What a token is judged by: its kind, `jti`, `iat`, and every agent taking part in it. */
export interface TokenFacts {
  type: 'access_token' | 'txn_token' | 'wit' | 'biscuit';
  jti?: string;
  iat?: number;
  /** `sub`, `client_id` and every actor of the chain. */
  parties: string[];
  clientId?: string;
  scopes: string[];
  aud?: string | string[];
}

/** What applying an event changed, so cached keys and decisions can be dropped. */
export interface SignalEffect {
  /** The issuer's own keys changed: refetch the JWKS. */
  keys: boolean;
  jtis: string[];
  agents: string[];
}

interface ClaimsChange {
  at: number;
  scopes?: Set<string>;
  aud?: string[];
}

const REVOKING_CHANGES = new Set(['revoke', 'update', 'delete']);

function eventTime(event: SecurityEvent): number {
  const t = event.event.event_timestamp;
  return typeof t === 'number' && Number.isFinite(t) ? Math.floor(t) : event.iat;
}

export class SecuritySignals {
  private readonly revokedJtis = new Map<string, number>();
  private readonly revokedAgents = new Map<string, number>();
  private readonly credentialChanges = new Map<string, number>();
  private readonly claimsChanges = new Map<string, ClaimsChange>();
  private nextPrune = 0;

  /**
   * @param issuer the agent-sts issuer: a credential change naming it means its signing keys changed
   * @param retentionSeconds how long an event is remembered: at least the longest token lifetime
   */
  constructor(private readonly issuer: string, private readonly retentionSeconds: number) {}

  apply(event: SecurityEvent, nowSec: number): SignalEffect {
    this.prune(nowSec);
    const effect: SignalEffect = { keys: false, jtis: [], agents: [] };
    const at = eventTime(event);
    const s = event.subject;
    const jti = s.format === 'jwt_id' && s.iss === this.issuer && typeof s.jti === 'string' ? s.jti : undefined;
    const uri = s.format === 'uri' && typeof s.uri === 'string' ? s.uri : undefined;
    const keep = (map: Map<string, number>, key: string, value: number) => map.set(key, Math.max(map.get(key) ?? value, value));
    switch (event.type) {
      case SESSION_REVOKED:
        if (jti) {
          this.revokedJtis.set(jti, nowSec + this.retentionSeconds);
          effect.jtis.push(jti);
        } else if (uri) {
          keep(this.revokedAgents, uri, at);
          effect.agents.push(uri);
        }
        break;
      case CREDENTIAL_CHANGE:
        if (uri === this.issuer) {
          effect.keys = true;
        } else if (uri) {
          if (REVOKING_CHANGES.has(String(event.event.change_type))) keep(this.credentialChanges, uri, at);
          effect.agents.push(uri);
        }
        break;
      case TOKEN_CLAIMS_CHANGE:
        if (uri) {
          const claims = (event.event.claims ?? {}) as Record<string, unknown>;
          const scopes = typeof claims.scope === 'string' ? new Set(claims.scope.split(' ').filter(Boolean)) : undefined;
          const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud.filter((a): a is string => typeof a === 'string') : undefined;
          // An older change (a SET delivered again, or late) never replaces a newer one: it could widen again.
          if ((this.claimsChanges.get(uri)?.at ?? -Infinity) <= at) this.claimsChanges.set(uri, { at, ...(scopes ? { scopes } : {}), ...(aud ? { aud } : {}) });
          effect.agents.push(uri);
        }
        break;
      default:
        break;
    }
    return effect;
  }

  /** Why a token that verified is nevertheless refused, or undefined when no event concerns it. */
  refusal(token: TokenFacts): string | undefined {
    const iat = token.iat ?? 0;
    if (token.jti !== undefined && this.revokedJtis.has(token.jti)) return 'it has been revoked';
    for (const party of token.parties) {
      const revokedAt = this.revokedAgents.get(party);
      if (revokedAt !== undefined && iat <= revokedAt) return `the tokens of ${party} have been revoked`;
    }
    if (token.type === 'wit') {
      const changedAt = this.credentialChanges.get(token.parties[0] ?? '');
      if (changedAt !== undefined && iat <= changedAt) return 'the agent\'s credentials have changed since it was issued';
    }
    const holder = token.clientId ?? token.parties[0];
    const change = holder !== undefined ? this.claimsChanges.get(holder) : undefined;
    if (change && iat <= change.at) {
      if (change.scopes && token.scopes.some((s) => !change.scopes!.has(s))) return 'it grants scopes its agent no longer has';
      const aud = token.aud === undefined ? [] : Array.isArray(token.aud) ? token.aud : [token.aud];
      if (change.aud && token.type === 'access_token' && aud.some((a) => !change.aud!.includes(a))) return 'it names an audience its agent may no longer reach';
    }
    return undefined;
  }

  private prune(nowSec: number): void {
    if (nowSec < this.nextPrune) return;
    this.nextPrune = nowSec + 60;
    const horizon = nowSec - this.retentionSeconds;
    for (const [jti, until] of this.revokedJtis) if (until < nowSec) this.revokedJtis.delete(jti);
    for (const map of [this.revokedAgents, this.credentialChanges]) {
      for (const [key, at] of map) if (at < horizon) map.delete(key);
    }
    for (const [key, change] of this.claimsChanges) if (change.at < horizon) this.claimsChanges.delete(key);
  }
}
