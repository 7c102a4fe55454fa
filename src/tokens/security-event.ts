import { signJwt, type Signer } from './our-jwt.js';

/** RFC 8417 Security Event Tokens as profiled by OpenID SSF 1.0 and CAEP 1.0. */
export const SET_TYP = 'secevent+jwt';
export const SET_MEDIA_TYPE = 'application/secevent+jwt';

const CAEP = 'https://schemas.openid.net/secevent/caep/event-type';
const SSF = 'https://schemas.openid.net/secevent/ssf/event-type';
export const SESSION_REVOKED = `${CAEP}/session-revoked`;
export const CREDENTIAL_CHANGE = `${CAEP}/credential-change`;
export const TOKEN_CLAIMS_CHANGE = `${CAEP}/token-claims-change`;
export const VERIFICATION = `${SSF}/verification`;
export const STREAM_UPDATED = `${SSF}/stream-updated`;

/** Event types a receiver may ask for; verification and stream-updated are always delivered. */
export const REQUESTABLE_EVENTS = [SESSION_REVOKED, CREDENTIAL_CHANGE, TOKEN_CLAIMS_CHANGE] as const;
export const STREAM_EVENTS = [VERIFICATION, STREAM_UPDATED] as const;
export const EVENTS_SUPPORTED = [...REQUESTABLE_EVENTS, ...STREAM_EVENTS];

/**
 * CAEP `credential_type` of the credentials we announce changes of (an agent's keys, client secret or WIT,
 * and the server's signing keys). CAEP lists none for workload credentials; `app` (a credential held by an
 * application) is the nearest, and is used for all of them.
 */
export const CREDENTIAL_TYPE = 'app';

/** RFC 9493 subject identifiers. */
export type SubjectId =
  | { format: 'jwt_id'; iss: string; jti: string }
  | { format: 'uri'; uri: string }
  | { format: 'opaque'; id: string };

export const tokenSubject = (iss: string, jti: string): SubjectId => ({ format: 'jwt_id', iss, jti });
export const uriSubject = (uri: string): SubjectId => ({ format: 'uri', uri });
export const streamSubject = (streamId: string): SubjectId => ({ format: 'opaque', id: streamId });

/** A subject's key, to compare subjects a receiver added or removed with the subjects of events. */
export function subjectKey(s: SubjectId): string {
  switch (s.format) {
    case 'jwt_id': return `jwt_id ${s.iss} ${s.jti}`;
    case 'uri': return `uri ${s.uri}`;
    case 'opaque': return `opaque ${s.id}`;
  }
}

export interface SecurityEventInput {
  iss: string;
  jti: string;
  iat: number;
  aud: string | string[];
  subId: SubjectId | Record<string, string>;
  eventType: string;
  event: Record<string, unknown>;
}

/**
 * The claims of a SET: `iss`, `jti`, `iat`, `aud`, the subject as top-level `sub_id` (SSF 1.0) and exactly
 * one event in `events`. No `sub` and no `exp` (RFC 8417 §2.2: a SET is not an access or identity token).
 */
export function securityEventClaims(input: SecurityEventInput): Record<string, unknown> {
  return {
    iss: input.iss,
    jti: input.jti,
    iat: input.iat,
    aud: input.aud,
    sub_id: input.subId,
    events: { [input.eventType]: input.event },
  };
}

/** Signs a SET with a server key (`typ: secevent+jwt`). */
export function signSecurityEvent(input: SecurityEventInput, signer: Signer): Promise<string> {
  return signJwt(SET_TYP, securityEventClaims(input), signer);
}
