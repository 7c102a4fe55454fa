import type { Knex } from 'knex';
import { hasNul } from './text.js';

export type TokenEndpointAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'wit';

export interface AgentRecord {
  id: string;
  scopes: string[];
  audiences: string[];
  token_endpoint_auth_method: TokenEndpointAuthMethod;
  client_secret_hash: string | null;
  jwks: { keys: Record<string, unknown>[] } | null;
  grant_types: string[];
  dpop_bound_access_tokens: boolean;
  max_delegation_depth: number;
  agent_checksums: string[];
  /** How the agent may prove itself to get a WIT: `{type: 'join_token' | 'jwt' | 'wit', ...}`. */
  attestors: { type: string; [k: string]: unknown }[];
  /** Token exchange policy: subject token types and issuers it may exchange, whether it may act for others. */
  token_exchange: { subject_token_types?: string[]; subject_issuers?: string[]; may_act_for_others?: boolean; max_budget?: number };
  /** What its Shared Signals streams may carry beyond events about itself and its own tokens (see `SsfReceiverPolicy`). */
  ssf: SsfReceiverPolicy;
  status: 'active' | 'disabled';
  created_at: string;
  updated_at: string;
  disabled_at: string | null;
}

/**
 * An admin's grant to an agent as a Shared Signals receiver: events about tokens whose audience is one of
 * `resources` and about agents allowed such an audience, events about the agents it `follows`, or every
 * event (`all_subjects`). Without it, a receiver's streams carry the events about itself, the tokens issued
 * to or for it, and the tokens whose audience is its own id.
 */
export interface SsfReceiverPolicy {
  resources?: string[];
  follows?: string[];
  all_subjects?: boolean;
}

export type NewAgent = Omit<AgentRecord, 'status' | 'created_at' | 'updated_at' | 'disabled_at'>;
export type AgentChanges = Partial<Pick<AgentRecord, 'scopes' | 'audiences' | 'jwks' | 'grant_types' | 'dpop_bound_access_tokens' | 'max_delegation_depth' | 'agent_checksums' | 'attestors' | 'token_exchange' | 'ssf' | 'client_secret_hash'>>;

const JSON_COLUMNS = ['scopes', 'audiences', 'jwks', 'grant_types', 'agent_checksums', 'attestors', 'token_exchange', 'ssf'] as const;

function toRow(values: Partial<AgentRecord>): Record<string, unknown> {
  const row: Record<string, unknown> = { ...values };
  for (const col of JSON_COLUMNS) {
    if (col in row) row[col] = row[col] === null ? null : JSON.stringify(row[col]);
  }
  return row;
}

function iso(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  return v instanceof Date ? v.toISOString() : new Date(String(v)).toISOString();
}

function fromRow(row: Record<string, unknown>): AgentRecord {
  return {
    ...(row as unknown as AgentRecord),
    created_at: iso(row.created_at)!,
    updated_at: iso(row.updated_at)!,
    disabled_at: iso(row.disabled_at),
  };
}

export class AgentsRepo {
  constructor(private readonly db: Knex) {}

  /** Inserts an agent; returns undefined when the id is taken. */
  async insert(agent: NewAgent, trx: Knex = this.db): Promise<AgentRecord | undefined> {
    const rows = await trx('agents').insert(toRow(agent)).onConflict('id').ignore().returning('*');
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  async find(id: string, trx: Knex = this.db): Promise<AgentRecord | undefined> {
    if (hasNul(id)) return undefined;
    const row = await trx('agents').where({ id }).first();
    return row ? fromRow(row) : undefined;
  }

  async list(opts: { status?: string; limit: number; after?: string }): Promise<AgentRecord[]> {
    const q = this.db('agents').orderBy('id').limit(opts.limit);
    if (opts.status) q.where({ status: opts.status });
    if (opts.after) q.where('id', '>', opts.after);
    return (await q).map(fromRow);
  }

  async update(id: string, changes: AgentChanges, trx: Knex = this.db): Promise<AgentRecord | undefined> {
    if (hasNul(id)) return undefined;
    const rows = await trx('agents').where({ id }).update({ ...toRow(changes), updated_at: trx.fn.now() }).returning('*');
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  /** Disables an active agent; undefined when there is no active agent with this id. */
  async disable(id: string, trx: Knex = this.db): Promise<AgentRecord | undefined> {
    if (hasNul(id)) return undefined;
    const rows = await trx('agents').where({ id, status: 'active' }).update({ status: 'disabled', disabled_at: trx.fn.now(), updated_at: trx.fn.now() }).returning('*');
    return rows[0] ? fromRow(rows[0]) : undefined;
  }
}
