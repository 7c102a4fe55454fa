import { errors } from 'oidc-provider';
import { witAuthStorage } from './wit-client-auth.js';

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
  const auth = witAuthStorage.getStore();
  if (!auth) return;
  if (token.clientId !== auth.agentId) throw new errors.InvalidClient('the WIT was issued to another agent');
  const cnf = (jwt.payload.cnf ?? {}) as { jkt?: string };
  if (!cnf.jkt) {
    jwt.payload.cnf = { ...cnf, jkt: auth.jkt };
    token.jkt = auth.jkt;
  }
  if (auth.agentChecksum) jwt.payload.agent_checksum = auth.agentChecksum;
}
