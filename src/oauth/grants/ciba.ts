import type Provider from 'oidc-provider';
import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import * as builtin from 'oidc-provider/lib/actions/grants/ciba.js';
import type { ApprovalRecord, ApprovalsRepo } from '../../storage/approvals-repo.js';
import { CIBA_GRANT } from '../../policy/workflows.js';
import type { IssuanceContext } from '../token-records.js';
import { workloadAuthOf } from '../wit-client-auth.js';
import { noteWorkflowRequest, toOAuthError, type WorkflowIntents } from '../workflow-intent.js';
import { boundGrantHelpers } from './builtin-grants.js';
import type { Client } from './exchange-request.js';

type State = { issuance?: IssuanceContext };

export interface CibaGrantDeps {
  intents: WorkflowIntents;
  approvals: ApprovalsRepo;
  now: () => number;
  pollInterval: number;
}

/**
 * Registers oidc-provider's CIBA grant again (poll mode), around the built-in handler, which keeps finding,
 * consuming and answering for the request (`authorization_pending`, `access_denied`, `invalid_grant` once used):
 * a pending request polled faster than the interval gets `slow_down`, an expired one `expired_token` (and is
 * recorded as expired); an approved one is the workflow step's run, checked like any other step (agent,
 * checksum, dependencies, replay) before the token is minted and again, atomically with taking the approval,
 * as its record is inserted. The token is the step's intent-bound access token, its `intent` naming the
 * approver; no ID token is returned with it.
 */
export function registerCibaGrant(provider: Provider, deps: CibaGrantDeps): void {
  const redeem = builtin.handler.bind(undefined, provider, boundGrantHelpers(provider));
  const handler = async (ctx: KoaContextWithOIDC) => {
    const authReqId = (ctx.oidc.params as { auth_req_id?: unknown }).auth_req_id;
    const client = ctx.oidc.client as unknown as Client;
    const approval = typeof authReqId === 'string' && authReqId ? await deps.approvals.findByAuthReqId(authReqId) : undefined;
    if (approval && approval.client_id === client.clientId) {
      noteWorkflowRequest(ctx, approval.workflow_id, approval.txn);
      await checkApproval(ctx, approval, client, deps);
    }
    try {
      await redeem(ctx);
    } catch (err) {
      // The provider keeps a denial's error but not its description (it stores it under another name): add it back.
      if (approval?.status === 'denied' && err instanceof errors.AccessDenied) {
        (err as { error_description?: string }).error_description = `denied by ${approval.decided_by}${approval.reason ? `: ${approval.reason}` : ''}`;
      }
      throw err;
    }
    // A token from this grant is only ever an approved workflow step's.
    if (!(ctx.state as State).issuance?.workflow) throw new errors.InvalidGrant('backchannel authentication request is not an approval of a workflow step');
    const body = ctx.body as Record<string, unknown>;
    delete body.id_token;
  };
  provider.registerGrantType(CIBA_GRANT, handler as never, [...builtin.parameters], []);
}

async function checkApproval(ctx: KoaContextWithOIDC, approval: ApprovalRecord, client: Client, deps: CibaGrantDeps): Promise<void> {
  const now = deps.now();
  // Past its expiry the provider no longer finds the request: answer for it, as CIBA says.
  if (approval.token_jti === null && (approval.status === 'expired' || approval.expires_at <= now)) {
    if (approval.status === 'denied') throw new errors.AccessDenied(`denied by ${approval.decided_by}${approval.reason ? `: ${approval.reason}` : ''}`);
    if (approval.status === 'pending') await deps.approvals.expire(approval.id, now, 'polled after its expiry');
    throw new errors.ExpiredToken(`approval request ${approval.id} ${approval.status === 'approved' ? 'expired before it was redeemed' : 'expired unanswered'}`);
  }
  if (approval.status === 'pending') {
    if (!(await deps.approvals.notePoll(approval.id, now, deps.pollInterval))) {
      throw new errors.SlowDown(`poll at most every ${deps.pollInterval} seconds`);
    }
    return;
  }
  if (approval.status !== 'approved' || approval.token_jti !== null) return;
  const checksum = workloadAuthOf(client.clientId)?.agentChecksum;
  try {
    const issuance = await deps.intents.resolve(ctx, { clientId: client.clientId, ...(checksum ? { agentChecksum: checksum } : {}) }, undefined, {
      params: { workflow_id: approval.workflow_id, workflow_step: approval.workflow_step, workflow_version: String(approval.workflow_version), txn: approval.txn },
      viaApproval: true,
      approval: { approved_by: approval.decided_by!, approved_at: Math.floor(Date.parse(approval.decided_at!) / 1000) },
    });
    const state = ctx.state as State;
    state.issuance = {
      ...state.issuance,
      workflow: {
        ...issuance!,
        redeem: async (trx, jti) => ((await deps.approvals.redeem(approval.id, jti, trx)) ? undefined : `approval ${approval.id} was already used`),
      },
    };
  } catch (err) {
    throw toOAuthError(err);
  }
}
