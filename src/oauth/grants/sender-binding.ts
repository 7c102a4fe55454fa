import type { KoaContextWithOIDC } from 'oidc-provider';
import validateDpop, { checkDpopReplay } from 'oidc-provider/lib/helpers/validate_dpop.js';
import { checkDpopRequired } from 'oidc-provider/lib/helpers/sender_constraints.js';
import { workloadAuthOf, type WitClientAuth } from '../wit-client-auth.js';

/**
 * The key a token minted by one of our grants is bound to, as for client credentials: the DPoP proof's key
 * when the request has one (checked and claimed once), else the requester's WIT key when it authenticated
 * with a WIT (its own: another agent's WIT is refused `invalid_client`); agents registered with `dpop_bound_access_tokens` must send a proof.
 */
export async function senderBinding(ctx: KoaContextWithOIDC, clientId: string): Promise<{ jkt?: string; wit?: WitClientAuth }> {
  const provider = ctx.oidc.provider;
  const dPoP = await validateDpop(provider, ctx);
  if (dPoP) await checkDpopReplay(provider, ctx, dPoP, clientId);
  else checkDpopRequired(provider, ctx, dPoP);
  const wit = workloadAuthOf(clientId);
  const jkt = dPoP?.thumbprint ?? wit?.jkt;
  return { ...(jkt ? { jkt } : {}), ...(wit ? { wit } : {}) };
}
