import { errors } from 'oidc-provider';
import { NarrowingError } from '../../policy/narrowing.js';
import type { AgentClientFields } from '../client-metadata.js';
import type { VerifiedClaims } from './issued-tokens.js';

/** The subject token, verified: one of ours (with its record, or its record check deferred) or an external issuer's. */
export interface Subject {
  kind: 'access_token' | 'txn_token' | 'external' | 'self_signed';
  claims: Record<string, unknown>;
  parentJti: string | null;
  txn?: string;
  /** A token of ours: its record is checked (again, or only then) as the issued token's record is written. */
  recordCheck?: VerifiedClaims['recordCheck'];
}

/** The authenticated client of a token-endpoint request, with our agent metadata. */
export type Client = { clientId: string; clientAuthMethod: string; jwks?: { keys?: Record<string, unknown>[] } } & AgentClientFields;
export type Params = Record<string, string | string[] | undefined>;

/** A parameter that may be given at most once. */
export function single(params: Params, name: string): string | undefined {
  const v = params[name];
  if (Array.isArray(v)) throw new errors.InvalidRequest(`${name} must be given once`);
  return v;
}

/** The OAuth error a narrowing refusal is answered with (its `code`). */
export function narrowingRefusal(err: NarrowingError): Error {
  switch (err.code) {
    case 'invalid_scope': return new errors.InvalidScope(err.message, '');
    case 'invalid_target': return new errors.InvalidTarget(err.message);
    case 'invalid_grant': return new errors.InvalidGrant(err.message);
    default: return new errors.InvalidRequest(err.message);
  }
}
