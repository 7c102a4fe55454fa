import { randomBytes } from 'node:crypto';
import { errors, type Account, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { ApprovalsRepo } from '../storage/approvals-repo.js';
import type { ApproversRepo } from '../storage/approvers-repo.js';
import type { EventsRepo } from '../storage/events-repo.js';
import type { Logger } from '../log/logger.js';
import { hasNul } from '../storage/text.js';
import { BINDING_MESSAGE_PATTERN } from '../policy/approvals.js';
import { stepScope, WORKFLOW_PARAMS } from '../policy/workflows.js';
import type { AgentClientFields } from './client-metadata.js';
import { workloadAuthOf } from './wit-client-auth.js';
import { anonymousRefusal } from './token-records.js';
import type { AnonymousRefusals } from '../http/anonymous-refusals.js';
import { toOAuthError, workflowTags, type WorkflowIntents, type WorkflowIssuance } from './workflow-intent.js';

export interface CibaDeps {
  approvers: ApproversRepo;
  approvals: ApprovalsRepo;
  intents: WorkflowIntents;
  events: EventsRepo;
  logger: Logger;
  now: () => number;
  /** Lifetime of an approval request (seconds); `requested_expiry` may shorten it. */
  approvalTtl: number;
  /** Minimum seconds between polls of a pending request (`slow_down` below it). */
  pollInterval: number;
}

type State = { approvalStep?: WorkflowIssuance };

/** Approvers are the accounts of this server: a CIBA request's `login_hint` names one. */
export function approverAccounts(approvers: ApproversRepo): Configuration['findAccount'] {
  return async (_ctx, sub) => {
    const approver = await approvers.find(sub);
    if (approver?.status !== 'active') return undefined;
    return { accountId: approver.id, claims: async () => ({ sub: approver.id }) } as Account;
  };
}

/**
 * The workflow parameters of a backchannel authentication request (oidc-provider `extraParams`, validated after
 * the request's other parameters): the step exists and needs approval, the requester is its agent, its
 * dependencies have run in the transaction (a new one when it has none and none is given) and it has not;
 * the scope is narrowed to the step's. The resolved step is kept for {@link cibaFeature}'s trigger.
 */
export function workflowExtraParams(intents: WorkflowIntents): Record<string, ((ctx: KoaContextWithOIDC, value: string | undefined) => Promise<void>) | null> {
  const validate = async (ctx: KoaContextWithOIDC) => {
    if (ctx.oidc.route !== 'backchannel_authentication') {
      // extraParams apply to every authorization endpoint; the others are closed here (app.ts), this is a backstop.
      if (WORKFLOW_PARAMS.some((p) => (ctx.oidc.params as Record<string, unknown>)[p] !== undefined)) {
        throw new errors.InvalidRequest('workflow parameters are accepted by the backchannel authentication endpoint only');
      }
      return;
    }
    const client = ctx.oidc.client as unknown as AgentClientFields & { clientId: string };
    const params = ctx.oidc.params as Record<string, unknown> & { scope?: string; txn?: string; workflow_version?: string };
    // The request is stored as it was made (jsonb), which can't hold U+0000: refuse it rather than fail to store it.
    const withNul = Object.keys(params).filter((k) => [params[k]].flat().some((v) => typeof v === 'string' && hasNul(v)));
    if (withNul.length) throw new errors.InvalidRequest(`${withNul.join(', ')} must not contain NUL (U+0000) characters`);
    const checksum = workloadAuthOf(client.clientId)?.agentChecksum;
    try {
      const issuance = await intents.resolve(ctx, { clientId: client.clientId, ...(checksum ? { agentChecksum: checksum } : {}) }, undefined, { viaApproval: true });
      if (!issuance) throw new errors.InvalidRequest('workflow_id and workflow_step are required: backchannel authentication here approves workflow steps');
      const requested = (params.scope ?? '').split(' ').filter((s) => s && s !== 'openid').join(' ');
      params.scope = `openid ${stepScope(issuance.step, requested || undefined, client.agent_scopes ?? [])}`;
      params.txn = issuance.txn;
      params.workflow_version = String(issuance.workflow.version);
      (ctx.state as State).approvalStep = issuance;
    } catch (err) {
      const e = toOAuthError(err);
      // The scope of an invalid_scope here is the step's, not one to echo back.
      if (e instanceof errors.InvalidScope) delete (e as { scope?: string }).scope;
      throw e;
    }
  };
  return { workflow_id: validate, ...Object.fromEntries(WORKFLOW_PARAMS.filter((p) => p !== 'workflow_id').map((p) => [p, null])) };
}

/** oidc-provider's CIBA feature (poll mode): approvers are the users, an approval request is recorded as it is made. */
export function cibaFeature(deps: CibaDeps): NonNullable<NonNullable<Configuration['features']>['ciba']> {
  return {
    enabled: true,
    deliveryModes: ['poll'],
    processLoginHint: async (_ctx, loginHint) => {
      const approver = loginHint ? await deps.approvers.find(loginHint) : undefined;
      return approver?.status === 'active' ? approver.id : undefined;
    },
    processLoginHintToken: async () => {
      throw new errors.InvalidRequest('login_hint_token is not supported: name the approver with login_hint');
    },
    verifyUserCode: async (_ctx, _account, userCode) => {
      if (userCode !== undefined) throw new errors.InvalidRequest('user_code is not supported');
    },
    validateBindingMessage: async (_ctx, message) => {
      if (message === undefined) throw new errors.InvalidBindingMessage('binding_message is required: state the intent of the step for the approver');
      if (!BINDING_MESSAGE_PATTERN.test(message)) throw new errors.InvalidBindingMessage('binding_message must be 1-256 characters without control characters');
    },
    validateRequestContext: async () => {},
    triggerAuthenticationDevice: async (ctx, request, account) => {
      const step = (ctx.state as State).approvalStep!;
      const params = ctx.oidc.params as { binding_message: string; scope: string };
      const resource = request.resource === undefined ? null : Array.isArray(request.resource) ? request.resource[0]! : request.resource;
      await deps.approvals.insert({
        id: randomBytes(16).toString('base64url'),
        auth_req_id: request.jti,
        client_id: request.clientId!,
        approver_id: account.accountId,
        workflow_id: step.workflow.id,
        workflow_version: step.workflow.version,
        workflow_step: step.step.id,
        txn: step.txn,
        binding_message: params.binding_message,
        scope: params.scope.split(' ').filter((s) => s !== 'openid').join(' '),
        resource,
        expires_at: deps.now() + request.expiration,
      });
    },
  };
}

/** The lifetime of a backchannel authentication request: `requested_expiry` when shorter than the configured one. */
export function approvalTtl(maxSeconds: number) {
  return (ctx: KoaContextWithOIDC) => {
    const requested = Number((ctx?.oidc?.params as { requested_expiry?: string } | undefined)?.requested_expiry);
    return Number.isSafeInteger(requested) && requested > 0 ? Math.min(requested, maxSeconds) : maxSeconds;
  };
}

/**
 * Around the backchannel authentication endpoint: a refusal is recorded with its reason (and the workflow and
 * transaction it named); an accepted request's answer says how often to poll.
 */
export function backchannelMiddleware(deps: Pick<CibaDeps, 'events' | 'logger' | 'pollInterval'> & { anonymous: Pick<AnonymousRefusals, 'refused'> }) {
  return async function backchannel(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    if (ctx.oidc?.route !== 'backchannel_authentication') return;
    const body = ctx.body as Record<string, unknown> | undefined;
    if (ctx.status === 200 && typeof body?.auth_req_id === 'string') {
      ctx.body = { ...body, interval: deps.pollInterval };
      return;
    }
    if (ctx.status >= 400 && body && typeof body.error === 'string' && ctx.status !== 503) {
      const id = ctx.oidc.client?.clientId ?? (ctx.oidc.params as { client_id?: unknown } | undefined)?.client_id;
      const event = {
        decision: 'refused' as const,
        action: 'backchannel_authentication',
        client_id: typeof id === 'string' ? id.slice(0, 2048) : null,
        reason: body.error,
        detail: typeof body.error_description === 'string' ? body.error_description : null,
      };
      await (anonymousRefusal(ctx, body.error) ? deps.anonymous.refused(ctx, event) : deps.events.record({ ...event, ...workflowTags(ctx) }))
        .catch((err: Error) => deps.logger.warn({ err: { message: err.message } }, 'decision event not recorded'));
    }
  };
}
