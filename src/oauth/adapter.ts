import type { Adapter, AdapterPayload } from 'oidc-provider';
import type { AgentsCache } from '../storage/agents-cache.js';
import type { AgentRecord } from '../storage/agents-repo.js';
import type { OidcPayloadsRepo } from '../storage/oidc-payloads-repo.js';
import { agentToClientMetadata } from './client-metadata.js';
import { workloadAuthOf } from './wit-client-auth.js';

/**
 * oidc-provider's storage: clients come from the agent registry (disabled agents are not found),
 * everything else it persists goes to the oidc_payloads table.
 */
export function adapterFactory(agents: AgentsCache, payloads: OidcPayloadsRepo) {
  // One metadata object per agent record, so the provider's Client built from it can be found again (client-lookup.ts).
  const metadata = new WeakMap<AgentRecord, AdapterPayload>();
  const metadataOf = (agent: AgentRecord) => {
    let m = metadata.get(agent);
    if (!m) {
      m = agentToClientMetadata(agent) as AdapterPayload;
      metadata.set(agent, m);
    }
    return m;
  };
  return class DatabaseAdapter implements Adapter {
    constructor(readonly model: string) {}

    async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
      if (this.model === 'Client') throw new Error('clients are registered through the admin API');
      await payloads.upsert(this.model, id, payload as Record<string, unknown>, expiresIn);
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      if (this.model === 'Client') {
        const agent = await agents.find(id);
        if (agent?.status !== 'active') return undefined;
        // A WIT agent exists for the provider only in a request that authenticated with its WIT.
        if (agent.token_endpoint_auth_method === 'wit' && !workloadAuthOf(agent.id, 'ignore')) return undefined;
        return metadataOf(agent);
      }
      return (await payloads.find(this.model, 'id', id)) as AdapterPayload | undefined;
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return (await payloads.find(this.model, 'user_code', userCode)) as AdapterPayload | undefined;
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return (await payloads.find(this.model, 'uid', uid)) as AdapterPayload | undefined;
    }

    async consume(id: string): Promise<void> {
      await payloads.consume(this.model, id);
    }

    async destroy(id: string): Promise<void> {
      await payloads.destroy(this.model, id);
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await payloads.revokeByGrantId(this.model, grantId);
    }
  };
}
