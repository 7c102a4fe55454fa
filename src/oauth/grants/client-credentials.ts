import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import * as builtin from 'oidc-provider/lib/actions/grants/client_credentials.js';
import { stepScope, WORKFLOW_PARAMS } from '../../policy/workflows.js';
import type { IssuanceContext } from '../token-records.js';
import { workloadAuthOf } from '../wit-client-auth.js';
import { toOAuthError, type WorkflowIntents } from '../workflow-intent.js';
import { boundGrantHelpers } from './builtin-grants.js';
import type { Client } from './exchange-request.js';

type State = { issuance?: IssuanceContext };

/**
 * Registers oidc-provider's client-credentials grant again, accepting the workflow parameters, with the
 * workflow step checked before the built-in grant mints anything. (oidc-provider's `extraParams` apply to
 * authorization requests only; a grant's parameters are those it was registered with.)
 */
export function registerClientCredentials(provider: Provider, intents: WorkflowIntents): void {
  const mint = builtinClientCredentials(provider);
  const handler = async (ctx: KoaContextWithOIDC) => {
    await bindToWorkflowStep(ctx, intents);
    await mint(ctx);
  };
  provider.registerGrantType('client_credentials', handler as never, CLIENT_CREDENTIALS_PARAMS, CLIENT_CREDENTIALS_DUPES);
}

/** The parameters client credentials is registered with: oidc-provider's, `resource` (repeatable) and the workflow's. */
export const CLIENT_CREDENTIALS_PARAMS = [...builtin.parameters, 'resource', ...WORKFLOW_PARAMS];
export const CLIENT_CREDENTIALS_DUPES = ['resource'];

/** oidc-provider's own client-credentials handler, bound to `provider`: it mints the token. */
export function builtinClientCredentials(provider: Provider): (ctx: KoaContextWithOIDC) => Promise<void> {
  return builtin.handler.bind(undefined, provider, boundGrantHelpers(provider)) as (ctx: KoaContextWithOIDC) => Promise<void>;
}

async function bindToWorkflowStep(ctx: KoaContextWithOIDC, intents: WorkflowIntents): Promise<void> {
  const client = ctx.oidc.client as unknown as Client;
  const checksum = workloadAuthOf(client.clientId)?.agentChecksum;
  try {
    const issuance = await intents.resolve(ctx, { clientId: client.clientId, ...(checksum ? { agentChecksum: checksum } : {}) });
    if (!issuance) return;
    const params = ctx.oidc.params as { scope?: string };
    params.scope = stepScope(issuance.step, params.scope || undefined, client.agent_scopes ?? []);
    const state = ctx.state as State;
    state.issuance = { ...state.issuance, workflow: issuance };
  } catch (err) {
    throw toOAuthError(err);
  }
}

/** JWT customizer part: a client-credentials token issued for a workflow step carries `intent` and `txn`. */
export function addWorkflowClaims(ctx: unknown, jwt: { payload: Record<string, unknown> }): void {
  const workflow = ((ctx as { state?: State } | undefined)?.state)?.issuance?.workflow;
  if (!workflow) return;
  jwt.payload.intent = workflow.intent;
  jwt.payload.txn = workflow.txn;
}
