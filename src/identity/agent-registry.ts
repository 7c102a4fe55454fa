import type { Knex } from 'knex';
import { AgentsRepo, type AgentRecord } from '../storage/agents-repo.js';
import { EventsRepo } from '../storage/events-repo.js';
import { TokensRepo } from '../storage/tokens-repo.js';
import { RegistrationError, SECRET_METHODS, validateAgentChanges, validateNewAgent, type RegistrationLimits } from './agent-registration.js';
import { generateClientSecret, hashClientSecret } from './client-secret.js';
import { JoinTokensRepo } from '../storage/join-tokens-repo.js';
import { createJoinToken } from './attestors/join-token.js';
import { noSignals, type SecuritySignals } from '../storage/security-signals.js';

export class AgentExistsError extends Error {
  constructor(id: string) {
    super(`an agent with id ${id} is already registered`);
    this.name = 'AgentExistsError';
  }
}

/** What the admin API shows of an agent: everything but the secret's hash. */
export type AgentView = Omit<AgentRecord, 'client_secret_hash'>;

export function agentView(agent: AgentRecord): AgentView {
  const { client_secret_hash: _hidden, ...view } = agent;
  return view;
}

/** Registering, changing and disabling agents; each change is one transaction with its audit event. */
export class AgentRegistry {
  private readonly agents: AgentsRepo;

  constructor(
    private readonly db: Knex,
    private readonly limits: RegistrationLimits,
    private readonly now: () => number,
    private readonly joinTokenTtl = 600,
    /** Told after an agent changed, so caches drop it. */
    private readonly changed: (id: string) => void = () => {},
    /** Told of revocations and credential and claim changes in their transactions (Shared Signals). */
    private readonly signals: SecuritySignals = noSignals,
  ) {
    this.agents = new AgentsRepo(db);
  }

  /** Registers an agent; secret-based agents get a client secret, returned here once and stored only as a hash. */
  async register(input: unknown): Promise<{ agent: AgentView; client_secret?: string }> {
    const fields = await validateNewAgent(input, this.limits);
    const secret = SECRET_METHODS.has(fields.token_endpoint_auth_method) ? generateClientSecret() : undefined;
    const hash = secret ? await hashClientSecret(secret) : null;
    const agent = await this.db.transaction(async (trx) => {
      const created = await this.agents.insert({ ...fields, client_secret_hash: hash }, trx);
      if (!created) throw new AgentExistsError(fields.id);
      await new EventsRepo(trx).record({ decision: 'admin', action: 'agent.register', client_id: created.id });
      return created;
    });
    return { agent: agentView(agent), ...(secret ? { client_secret: secret } : {}) };
  }

  async get(id: string): Promise<AgentView | undefined> {
    const agent = await this.agents.find(id);
    return agent && agentView(agent);
  }

  async list(opts: { status?: string; limit: number; after?: string }): Promise<AgentView[]> {
    return (await this.agents.list(opts)).map(agentView);
  }

  async update(id: string, input: unknown): Promise<AgentView | undefined> {
    const current = await this.agents.find(id);
    if (!current) return undefined;
    if (current.status !== 'active') throw new RegistrationError('the agent is disabled and can no longer change');
    const changes = await validateAgentChanges(input, current.token_endpoint_auth_method, this.limits);
    const updated = await this.db.transaction(async (trx) => {
      const row = await this.agents.update(id, changes, trx);
      await new EventsRepo(trx).record({ decision: 'admin', action: 'agent.update', client_id: id, detail: Object.keys(changes).join(',') });
      if (row && (changes.scopes !== undefined || changes.audiences !== undefined)) {
        await this.signals.claimsChanged(trx, id, { scope: row.scopes.join(' '), aud: row.audiences }, { aud: current.audiences });
      }
      if (row && changes.jwks !== undefined) await this.signals.credentialChanged(trx, id, 'update', 'the agent\'s keys changed');
      return row;
    });
    this.changed(id);
    return updated && agentView(updated);
  }

  /** A new client secret for a secret-based agent; the old one stops working at once. */
  async rotateSecret(id: string): Promise<{ agent: AgentView; client_secret: string } | undefined> {
    const current = await this.agents.find(id);
    if (!current) return undefined;
    if (current.status !== 'active') throw new RegistrationError('the agent is disabled');
    if (!SECRET_METHODS.has(current.token_endpoint_auth_method)) throw new RegistrationError(`the agent authenticates with ${current.token_endpoint_auth_method}, not a client secret`);
    const secret = generateClientSecret();
    const hash = await hashClientSecret(secret);
    const updated = await this.db.transaction(async (trx) => {
      const row = await this.agents.update(id, { client_secret_hash: hash }, trx);
      await new EventsRepo(trx).record({ decision: 'admin', action: 'agent.rotate_secret', client_id: id });
      await this.signals.credentialChanged(trx, id, 'update', 'the agent\'s client secret was rotated');
      return row!;
    });
    this.changed(id);
    return { agent: agentView(updated), client_secret: secret };
  }

  /** A one-time join token for WIT attestation, valid `ttl` seconds (default JOIN_TOKEN_TTL). */
  async createJoinToken(id: string, ttl?: number): Promise<{ join_token: string; expires_at: number } | undefined> {
    const agent = await this.agents.find(id);
    if (!agent) return undefined;
    if (agent.status !== 'active') throw new RegistrationError('the agent is disabled');
    if (!agent.attestors.some((a) => a.type === 'join_token')) throw new RegistrationError('the agent does not accept join_token attestation: add {"type": "join_token"} to its attestors');
    const expiresAt = this.now() + (ttl ?? this.joinTokenTtl);
    const token = await this.db.transaction(async (trx) => {
      const t = await createJoinToken(new JoinTokensRepo(trx), id, expiresAt);
      await new EventsRepo(trx).record({ decision: 'admin', action: 'agent.join_token', client_id: id });
      return t;
    });
    return { join_token: token, expires_at: expiresAt };
  }

  /**
   * Disables an agent and revokes every live token issued to or for it, with their descendants.
   * Disabling a disabled agent changes nothing.
   */
  async disable(id: string): Promise<{ agent: AgentView; revoked: string[] } | undefined> {
    const result = await this.db.transaction(async (trx) => {
      const agent = await this.agents.disable(id, trx);
      if (!agent) {
        const existing = await this.agents.find(id, trx);
        return existing && { agent: agentView(existing), revoked: [] };
      }
      const revoked = await new TokensRepo(trx, undefined, this.signals).revokeAllFor(id, 'agent disabled', this.now(), trx);
      await this.signals.agentRevoked(trx, id, 'agent disabled');
      const events = new EventsRepo(trx);
      await events.record({ decision: 'admin', action: 'agent.disable', client_id: id, detail: `${revoked.length} tokens revoked` });
      for (const jti of revoked) await events.record({ decision: 'revoked', action: 'agent.disable', client_id: id, jti, reason: 'agent disabled' });
      return { agent: agentView(agent), revoked };
    });
    this.changed(id);
    return result;
  }
}
