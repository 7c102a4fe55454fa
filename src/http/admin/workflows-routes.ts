import Router from '@koa/router';
import { z } from 'zod';
import type { EventsRepo, StoredDecisionEvent } from '../../storage/events-repo.js';
import type { StepRun, WorkflowRecord, WorkflowsRepo } from '../../storage/workflows-repo.js';
import type { ApprovalRecord, ApprovalsRepo } from '../../storage/approvals-repo.js';
import { MAX_WORKFLOW_VERSION, validateWorkflow } from '../../policy/workflow-definition.js';
import { ApiError, notFound } from '../errors.js';
import { jsonBody } from './json-body.js';
import { limitParam, parseQuery, textParam } from './query.js';

const versionParam = z.coerce.number().int().min(1).max(MAX_WORKFLOW_VERSION).optional();

/** An approval as the run shows it: who was asked, who decided what and when, the token it gave. */
function describeApproval(a: ApprovalRecord, now: number) {
  return {
    id: a.id, status: a.status === 'pending' && a.expires_at <= now ? 'expired' : a.status, requested_by: a.client_id, approver: a.approver_id, binding_message: a.binding_message,
    scope: a.scope, requested_at: a.created_at, expires_at: new Date(a.expires_at * 1000).toISOString(),
    decided_by: a.decided_by, decided_at: a.decided_at, reason: a.reason, token_jti: a.token_jti,
  };
}

/**
 * Each step of a workflow version with its status in a transaction (for each token: who ran it, and who approved
 * it), the approvals asked for it, and the refusals recorded for it.
 */
function describeRun(workflow: WorkflowRecord, txn: string, runs: StepRun[], events: { refusals: StoredDecisionEvent[]; approvals: StoredDecisionEvent[] }, approvals: ApprovalRecord[], now: number) {
  const mine = runs.filter((r) => r.workflow_version === workflow.version);
  const byJti = new Map(approvals.filter((a) => a.token_jti).map((a) => [a.token_jti!, a]));
  return {
    workflow_id: workflow.id,
    workflow_version: workflow.version,
    txn,
    steps: workflow.steps.map((step) => {
      const issued = mine.filter((r) => r.workflow_step === step.id).map((r) => {
        const approval = byJti.get(r.jti);
        return {
          client_id: r.client_id, jti: r.jti, iat: r.iat, revoked_at: r.revoked_at,
          ...(approval ? { approved_by: approval.decided_by, approved_at: approval.decided_at, approval_id: approval.id } : {}),
        };
      });
      const asked = approvals.filter((a) => a.workflow_version === workflow.version && a.workflow_step === step.id).map((a) => describeApproval(a, now));
      return {
        id: step.id, agent: step.agent, tool: step.tool, depends_on: step.depends_on, approval: step.approval,
        status: issued.length ? 'issued' : 'not_issued', issued, ...(step.approval ? { approvals: asked } : {}),
      };
    }),
    approval_events: events.approvals,
    refusals: events.refusals,
  };
}

export function workflowsRoutes(deps: { workflows: WorkflowsRepo; events: EventsRepo; approvals: ApprovalsRepo; trustDomain: string; now?: () => number }): Router {
  const now = deps.now ?? (() => Math.floor(Date.now() / 1000));
  const router = new Router();

  router.post('/admin/workflows', jsonBody, async (ctx) => {
    const wf = validateWorkflow(ctx.request.body, deps.trustDomain);
    const created = await deps.workflows.register(wf);
    if (!created) throw new ApiError(409, 'conflict', `workflow ${wf.id} already has a version ${wf.version}; register a new version`);
    ctx.status = 201;
    ctx.set('Location', `/admin/workflows/${encodeURIComponent(created.id)}?version=${created.version}`);
    ctx.body = created;
  });

  router.get('/admin/workflows', async (ctx) => {
    const q = parseQuery({ limit: limitParam, after: textParam.optional() }, ctx.query);
    const workflows = await deps.workflows.listLatest(q.limit, q.after);
    ctx.body = { workflows, ...(workflows.length === q.limit ? { next: workflows.at(-1)!.id } : {}) };
  });

  router.get('/admin/workflows/:id', async (ctx) => {
    const q = parseQuery({ version: versionParam }, ctx.query);
    const workflow = await deps.workflows.find(ctx.params.id!, q.version);
    if (!workflow) throw notFound(q.version === undefined ? 'workflow' : 'workflow version');
    ctx.body = { ...workflow, versions: await deps.workflows.versions(workflow.id) };
  });

  router.get('/admin/workflows/:id/runs/:txn', async (ctx) => {
    const q = parseQuery({ version: versionParam }, ctx.query);
    const id = ctx.params.id!;
    const txn = ctx.params.txn!;
    const runs = await deps.workflows.runs(id, txn);
    // The version asked for, else the one that ran in this transaction, else the latest.
    const version = q.version ?? (runs.length ? Math.max(...runs.map((r) => r.workflow_version)) : undefined);
    const workflow = await deps.workflows.find(id, version);
    if (!workflow) throw notFound(version === undefined ? 'workflow' : 'workflow version');
    // Approvals that expired unanswered are recorded as such when first noticed (here, or by the periodic sweep).
    await deps.approvals.expireOverdue(now(), { workflow_id: id, txn });
    const events = { refusals: await deps.events.workflowRefusals(id, txn), approvals: await deps.events.workflowApprovalEvents(id, txn) };
    ctx.body = describeRun(workflow, txn, runs, events, await deps.approvals.forRun(id, txn), now());
  });

  return router;
}
