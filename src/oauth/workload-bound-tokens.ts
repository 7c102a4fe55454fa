import { workloadAuthOf } from './wit-client-auth.js';

interface Token {
  clientId?: string;
  jkt?: string;
}

/**
 * oidc-provider's JWT access-token customizer: a token issued to a WIT-authenticated agent is bound to
 * the WIT's key (`cnf.jkt`, presented with DPoP proofs of that key) unless a DPoP proof bound it to
 * another key, and carries the agent checksum the WIT was issued for.
 */
export async function bindToWorkloadKey(_ctx: unknown, token: Token, jwt: { payload: Record<string, unknown> }): Promise<void> {
  // A token for no client, or another than the WIT's agent, under a WIT is refused (fail closed).
  const auth = workloadAuthOf(token.clientId ?? '');
  if (!auth) return;
  const cnf = (jwt.payload.cnf ?? {}) as { jkt?: string };
  if (!cnf.jkt) {
    jwt.payload.cnf = { ...cnf, jkt: auth.jkt };
    token.jkt = auth.jkt;
  }
  if (auth.agentChecksum) jwt.payload.agent_checksum = auth.agentChecksum;
}
