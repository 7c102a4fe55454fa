import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { TokensRepo } from '../storage/tokens-repo.js';
import type { WorkflowRecord, WorkflowStep, WorkflowsRepo } from '../storage/workflows-repo.js';
import { newTxn } from '../tokens/txn-token.js';
import {
  authorizeStep, intentClaim, readWorkflowRequest, stepRunRefusal, WorkflowRefusal, type IntentClaim, type StepApproval, type StepRequester,
} from '../policy/workflows.js';

/** The step an intent-bound token is being issued for, in its transaction. */
export interface WorkflowIssuance {
  workflow: WorkflowRecord;
  step: WorkflowStep;
  txn: string;
  intent: IntentClaim;
  /** For a step run on a human approval: binds the token to the approval, once (inside the record's transaction). */
  redeem?: (trx: Parameters<Parameters<TokensRepo['insertGuarded']>[1]>[0], jti: string) => Promise<string | undefined>;
}

/** How a workflow step is being asked for. */
export interface ResolveOptions {
  /** The transaction of a token-exchange subject. */
  subjectTxn?: string;
  /** The workflow parameters, when not the request's own (a CIBA poll: those of the approved request). */
  params?: Record<string, unknown>;
  /** A backchannel authentication request or its poll: only steps that need approval. */
  viaApproval?: boolean;
  /** Who approved the step, for the `intent` claim. */
  approval?: StepApproval;
}

interface WorkflowState {
  /** The workflow and transaction a request named, for the record of its refusal. */
  workflowRequest?: { workflow_id: string; txn: string | null };
}

export function toOAuthError(err: unknown): unknown {
  if (!(err instanceof WorkflowRefusal)) return err;
  if (err.code === 'unauthorized_client') return new errors.UnauthorizedClient(err.message);
  if (err.code === 'invalid_scope') return new errors.InvalidScope(err.message, '');
  return new errors.InvalidRequest(err.message);
}

/** The workflow and transaction a refused request named (empty when it named none). */
export function workflowTags(ctx: KoaContextWithOIDC): { workflow_id?: string; workflow_txn?: string | null } {
  const named = (ctx.state as WorkflowState).workflowRequest;
  return named ? { workflow_id: named.workflow_id, workflow_txn: named.txn } : {};
}

/**
 * Resolves the workflow step a token request names (docs/wire-formats.md §9), before anything is minted: the
 * workflow version exists, the step exists and needs no approval, the requester is its agent, and, as a
 * first check, its dependencies have run in the transaction and it has not (unless repeatable). The token
 * record's insert repeats that last check atomically ({@link stepRunGuard}).
 */
export class WorkflowIntents {
  constructor(private readonly deps: { workflows: WorkflowsRepo; tokens: TokensRepo }) {}

  /** Undefined when the request names no workflow. `subjectTxn`: the transaction of a token-exchange subject. */
  async resolve(ctx: KoaContextWithOIDC, who: StepRequester, subjectTxn?: string, opts: Omit<ResolveOptions, 'subjectTxn'> = {}): Promise<WorkflowIssuance | undefined> {
    const req = readWorkflowRequest(opts.params ?? ctx.oidc.params as Record<string, unknown>);
    if (!req) return undefined;
    (ctx.state as WorkflowState).workflowRequest = { workflow_id: req.workflowId, txn: subjectTxn ?? req.txn ?? null };
    if (subjectTxn && req.txn && subjectTxn !== req.txn) {
      throw new WorkflowRefusal('invalid_request', `txn ${req.txn} is not the subject token's transaction (${subjectTxn})`);
    }
    const workflow = await this.deps.workflows.find(req.workflowId, req.version);
    if (!workflow) {
      throw new WorkflowRefusal('invalid_request', req.version === undefined
        ? `workflow ${req.workflowId} is not registered`
        : `workflow ${req.workflowId} has no version ${req.version}`);
    }
    const step = authorizeStep(workflow, req.step, who, opts.viaApproval);
    let txn = subjectTxn ?? req.txn;
    if (!txn) {
      if (step.depends_on.length) throw new WorkflowRefusal('invalid_request', `txn is required: step ${step.id} depends on ${step.depends_on.join(', ')}`);
      txn = newTxn();
    }
    (ctx.state as WorkflowState).workflowRequest = { workflow_id: workflow.id, txn };
    const refusal = stepRunRefusal(step, txn, await this.deps.tokens.workflowStepsInTxn(txn, workflow.id, workflow.version));
    if (refusal) throw new WorkflowRefusal('invalid_request', refusal);
    return { workflow, step, txn, intent: intentClaim(workflow, step, who.clientId, opts.approval) };
  }
}

/** The workflow and transaction a request names, for the record of its refusal. */
export function noteWorkflowRequest(ctx: KoaContextWithOIDC, workflowId: string, txn: string | null): void {
  (ctx.state as WorkflowState).workflowRequest = { workflow_id: workflowId, txn };
}

/**
 * The final check of a step run, inside the transaction that inserts its token's record: the step may run,
 * and a step run on an approval takes the approval (once).
 */
export function stepRunGuard(tokens: TokensRepo, issuance: WorkflowIssuance, jti: string) {
  return async (trx: Parameters<Parameters<TokensRepo['insertGuarded']>[1]>[0]) => stepRunRefusal(
    issuance.step, issuance.txn, await tokens.workflowStepsInTxn(issuance.txn, issuance.workflow.id, issuance.workflow.version, trx),
  ) ?? (issuance.redeem ? issuance.redeem(trx, jti) : undefined);
}
