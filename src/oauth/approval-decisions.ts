import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import type { ApprovalRecord, ApprovalsRepo } from '../storage/approvals-repo.js';
import { ApprovalRefusal, decisionRefusal, deciderName, maySee, type Decider } from '../policy/approvals.js';
import { witAuthStorage, type WitClientAuth } from './wit-client-auth.js';

/**
 * Approvers' decisions on CIBA requests. A decision is taken on the approval record first (only a pending,
 * unexpired approval changes, so of concurrent decisions one wins), then handed to oidc-provider
 * (`backchannelResult`): a Grant for the approver, the agent and the step's scope on approval, `access_denied`
 * otherwise.
 */
export class ApprovalDecisions {
  constructor(private readonly deps: { approvals: ApprovalsRepo; provider: () => Provider; now: () => number }) {}

  /** An approval `who` may see; a 404 refusal otherwise. */
  async find(id: string, who: Decider): Promise<ApprovalRecord> {
    const approval = await this.deps.approvals.find(id);
    if (!approval || !maySee(approval, who)) throw new ApprovalRefusal(404, 'not_found', 'approval not found');
    return approval;
  }

  async decide(id: string, who: Decider, approve: boolean, reason?: string): Promise<ApprovalRecord> {
    const approval = await this.deps.approvals.find(id);
    if (!approval) throw new ApprovalRefusal(404, 'not_found', 'approval not found');
    const refusal = decisionRefusal(approval, who);
    if (refusal) throw refusal;
    const now = this.deps.now();
    if (approval.expires_at <= now) {
      await this.deps.approvals.expire(approval.id, now, `${deciderName(who)} answered after its expiry`);
      throw new ApprovalRefusal(409, 'expired', `approval ${approval.id} has expired`);
    }
    const decided = await this.deps.approvals.decide(approval.id, { status: approve ? 'approved' : 'denied', decided_by: deciderName(who), reason: reason ?? null }, now);
    if (!decided) {
      const current = await this.deps.approvals.find(approval.id);
      throw new ApprovalRefusal(409, 'conflict', `approval ${approval.id} is already ${current?.status ?? 'decided'}`);
    }
    const authReqId = (await this.deps.approvals.authReqId(approval.id))!;
    // The provider finds the request's client through the adapter, which resolves an agent authenticating with a
    // WIT only within a request authenticated as it: this decision acts for the request that agent made.
    try {
      await this.handOver(authReqId, approval, who, approve, reason);
    } catch (err) {
      const message = err instanceof Error ? err.message : '';
      // The request expired as it was decided, or the agent was disabled since: the decision can't reach it.
      if (message === 'BackchannelAuthenticationRequest not found') {
        await this.deps.approvals.expire(approval.id, now, `${deciderName(who)} answered as it expired`, true);
        throw new ApprovalRefusal(409, 'expired', `approval ${approval.id} has expired`);
      }
      if (message === 'Client not found') {
        await this.deps.approvals.expire(approval.id, now, 'the agent that asked is no longer active', true);
        throw new ApprovalRefusal(409, 'conflict', `approval ${approval.id} was asked by an agent that is no longer active`);
      }
      throw err;
    }
    return decided;
  }

  /** The decision, to oidc-provider: a Grant on approval, `access_denied` on denial. */
  private async handOver(authReqId: string, approval: ApprovalRecord, who: Decider, approve: boolean, reason: string | undefined): Promise<void> {
    const provider = this.deps.provider();
    await witAuthStorage.run({ agentId: approval.client_id } as WitClientAuth, async () => {
      if (!approve) {
        await provider.backchannelResult(authReqId, new errors.AccessDenied(`denied by ${deciderName(who)}${reason ? `: ${reason}` : ''}`));
        return;
      }
      const grant = new provider.Grant({ accountId: approval.approver_id, clientId: approval.client_id });
      grant.addOIDCScope('openid');
      if (approval.resource) grant.addResourceScope(approval.resource, approval.scope);
      await grant.save();
      await provider.backchannelResult(authReqId, grant);
    });
  }
}
