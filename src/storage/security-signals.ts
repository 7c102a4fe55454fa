import type { Knex } from 'knex';

/** Who caused a revocation (CAEP `initiating_entity`). */
export type InitiatingEntity = 'admin' | 'user' | 'policy' | 'system';

/** A token a revocation has just marked revoked. `depth` 0 is the token revoked directly, deeper ones its descendants. */
export interface RevokedToken {
  jti: string;
  type: string;
  client_id: string;
  sub: string;
  /** The token's audiences. */
  audience: string[];
  depth: number;
}

export type CredentialChange = 'create' | 'revoke' | 'update' | 'delete';

/**
 * Told of security-relevant changes inside the database transaction that makes them, so what it writes
 * (the Shared Signals outbox) commits or rolls back with the change. Storage and identity call it; the
 * SSF transmitter implements it.
 */
export interface SecuritySignals {
  tokensRevoked(trx: Knex, tokens: RevokedToken[], cause: { initiating_entity: InitiatingEntity; reason: string }): Promise<void>;
  /** Every token of the agent issued up to now is revoked and its credentials with them (the agent is disabled). */
  agentRevoked(trx: Knex, agentId: string, reason: string): Promise<void>;
  /** A credential of a subject (an agent's keys or secret, or the server's own signing keys) changed. */
  credentialChanged(trx: Knex, uri: string, change: CredentialChange, reason: string): Promise<void>;
  /** The scopes or audiences tokens of an agent may carry changed (`before`: the audiences it had). */
  claimsChanged(trx: Knex, agentId: string, claims: { scope: string; aud: string[] }, before: { aud: string[] }): Promise<void>;
}

export const noSignals: SecuritySignals = {
  async tokensRevoked() {},
  async agentRevoked() {},
  async credentialChanged() {},
  async claimsChanged() {},
};

/** Runs `fn` in `trx` when it is a transaction already, else in a new transaction of `db`. */
export function inTransaction<T>(db: Knex, trx: Knex, fn: (trx: Knex) => Promise<T>): Promise<T> {
  return (trx as Knex.Transaction).isTransaction ? fn(trx) : db.transaction(fn);
}
