import type { AgentRecord } from '../storage/agents-repo.js';
import { CIBA_GRANT } from '../policy/workflows.js';

/** Client metadata properties of ours; oidc-provider keeps them on its Client objects under these snake_case names. */
export const AGENT_METADATA = ['agent_scopes', 'agent_audiences', 'agent_max_delegation_depth', 'agent_checksums', 'agent_token_exchange'] as const;

export interface AgentClientFields {
  agent_scopes?: string[];
  agent_audiences?: string[];
  agent_max_delegation_depth?: number;
  agent_checksums?: string[];
  agent_token_exchange?: AgentRecord['token_exchange'];
}

/**
 * Ed25519 keys registered with `alg: EdDSA` (or `Ed25519`) verify assertions under either name, as
 * clients send both; other keys keep the algorithm they were registered with.
 */
function clientJwks(jwks: NonNullable<AgentRecord['jwks']>): AgentRecord['jwks'] {
  return {
    keys: jwks.keys.map((k) => {
      if (k.kty === 'OKP' && (k.alg === 'EdDSA' || k.alg === 'Ed25519')) {
        const { alg: _alg, ...rest } = k;
        return rest;
      }
      return k;
    }),
  };
}

/** The oidc-provider client metadata of an active agent. */
export function agentToClientMetadata(agent: AgentRecord): Record<string, unknown> {
  return {
    client_id: agent.id,
    ...(agent.client_secret_hash ? { client_secret: agent.client_secret_hash } : {}),
    // WIT + WPT authentication happens before oidc-provider sees the request (see wit-client-auth.ts);
    // to the provider such an agent is a client without its own authentication.
    token_endpoint_auth_method: agent.token_endpoint_auth_method === 'wit' ? 'none' : agent.token_endpoint_auth_method,
    ...(agent.jwks ? { jwks: clientJwks(agent.jwks) } : {}),
    grant_types: agent.grant_types,
    // Human approval (CIBA) is offered in poll mode only.
    ...(agent.grant_types.includes(CIBA_GRANT) ? { backchannel_token_delivery_mode: 'poll' } : {}),
    response_types: [],
    redirect_uris: [],
    dpop_bound_access_tokens: agent.dpop_bound_access_tokens,
    agent_scopes: agent.scopes,
    agent_audiences: agent.audiences,
    agent_max_delegation_depth: agent.max_delegation_depth,
    agent_checksums: agent.agent_checksums,
    agent_token_exchange: agent.token_exchange,
  };
}
