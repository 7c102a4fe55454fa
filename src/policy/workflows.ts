import type { Intent } from '../tokens/access-token.js';
import type { WorkflowRecord, WorkflowStep } from '../storage/workflows-repo.js';
import { MAX_WORKFLOW_VERSION, WORKFLOW_ID_PATTERN } from './workflow-definition.js';
import { CIBA_GRANT_TYPE } from '../identity/agent-registration.js';

/** A workflow token request refused; `code` is the OAuth error. */
export class WorkflowRefusal extends Error {
  constructor(readonly code: 'invalid_request' | 'unauthorized_client' | 'invalid_scope', message: string) {
    super(message);
    this.name = 'WorkflowRefusal';
  }
}

/** Token request parameters that bind a token to a workflow step. */
export const WORKFLOW_PARAMS = ['workflow_id', 'workflow_step', 'workflow_version', 'txn'] as const;

export interface WorkflowRequest {
  workflowId: string;
  step: string;
  version?: number;
  txn?: string;
}

/** The `intent` claim of an intent-bound token. */
export type IntentClaim = Intent;

const TXN_PATTERN = /^[\x21-\x7E]{1,255}$/;

/** Reads the workflow parameters of a token request; undefined when it names no workflow. */
export function readWorkflowRequest(params: Record<string, unknown>): WorkflowRequest | undefined {
  const value = (name: string): string | undefined => {
    const v = params[name];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new WorkflowRefusal('invalid_request', `${name} must be given once`);
    return v;
  };
  const workflowId = value('workflow_id');
  const step = value('workflow_step');
  const version = value('workflow_version');
  const txn = value('txn');
  if (workflowId === undefined) {
    const stray = [step && 'workflow_step', version && 'workflow_version', txn && 'txn'].filter(Boolean);
    if (stray.length) throw new WorkflowRefusal('invalid_request', `${stray.join(', ')} given without workflow_id`);
    return undefined;
  }
  if (!WORKFLOW_ID_PATTERN.test(workflowId)) throw new WorkflowRefusal('invalid_request', 'workflow_id is not a valid workflow id');
  if (!step) throw new WorkflowRefusal('invalid_request', 'workflow_step is required with workflow_id');
  if (step.length > 64) throw new WorkflowRefusal('invalid_request', 'workflow_step is not a valid step id');
  let v: number | undefined;
  if (version !== undefined) {
    v = /^[1-9][0-9]{0,6}$/.test(version) ? Number(version) : NaN;
    if (!(v <= MAX_WORKFLOW_VERSION)) throw new WorkflowRefusal('invalid_request', 'workflow_version must be a positive integer');
  }
  if (txn !== undefined && !TXN_PATTERN.test(txn)) throw new WorkflowRefusal('invalid_request', 'txn must be 1-255 printable characters without spaces');
  return { workflowId, step, ...(v !== undefined ? { version: v } : {}), ...(txn !== undefined ? { txn } : {}) };
}

/** Who asks for a step's token: the authenticated agent and the agent checksum it presented, if any. */
export interface StepRequester {
  clientId: string;
  agentChecksum?: string;
}

/** The CIBA grant type: how a step that needs human approval gets its token. */
export const CIBA_GRANT = CIBA_GRANT_TYPE;

/**
 * The step a request may get a token for: it exists, needs human approval exactly when the request is a
 * backchannel authentication request (`viaApproval`), and the requester is its agent (running with a checksum
 * the workflow lists for it, when it lists any).
 */
export function authorizeStep(workflow: WorkflowRecord, stepId: string, who: StepRequester, viaApproval = false): WorkflowStep {
  const step = workflow.steps.find((s) => s.id === stepId);
  if (!step) throw new WorkflowRefusal('invalid_request', `workflow ${workflow.id} version ${workflow.version} has no step ${JSON.stringify(stepId)}`);
  if (step.approval && !viaApproval) {
    throw new WorkflowRefusal('invalid_request', `step ${step.id} of workflow ${workflow.id} needs human approval: ask for it with a CIBA backchannel authentication request, then poll with grant_type ${CIBA_GRANT}`);
  }
  if (!step.approval && viaApproval) {
    throw new WorkflowRefusal('invalid_request', `step ${step.id} of workflow ${workflow.id} needs no human approval: ask for its token at the token endpoint`);
  }
  if (step.agent !== who.clientId) throw new WorkflowRefusal('unauthorized_client', `step ${step.id} of workflow ${workflow.id} is run by ${step.agent}, not by this agent`);
  const checksums = Object.hasOwn(workflow.agent_checksums, step.agent) ? workflow.agent_checksums[step.agent]! : undefined;
  if (checksums && !who.agentChecksum) {
    throw new WorkflowRefusal('unauthorized_client', `workflow ${workflow.id} requires this agent to present an agent checksum (authenticate with a WIT issued for one)`);
  }
  if (checksums && !checksums.includes(who.agentChecksum!)) {
    throw new WorkflowRefusal('unauthorized_client', `the agent checksum presented is not one workflow ${workflow.id} allows for this agent`);
  }
  return step;
}

/** Every requested scope must be one of the step's; without a request, the step's scopes the holder has. */
export function stepScope(step: WorkflowStep, requested: string | undefined, held: readonly string[] | undefined): string {
  if (requested !== undefined) {
    const beyond = requested.split(' ').filter((s) => s && !step.scopes.includes(s));
    if (beyond.length) throw new WorkflowRefusal('invalid_scope', `scope beyond workflow step ${step.id}: ${beyond.join(' ')}`);
    return requested;
  }
  const scope = step.scopes.filter((s) => !held || held.includes(s));
  if (!scope.length) throw new WorkflowRefusal('invalid_scope', `none of the scopes of workflow step ${step.id} is available to this request`);
  return scope.join(' ');
}

/**
 * Why the step may not run now in its transaction, given the steps already issued there: a dependency
 * has not run yet, or the step already ran and is not repeatable. Undefined when it may run.
 */
export function stepRunRefusal(step: WorkflowStep, txn: string, ran: ReadonlySet<string>): string | undefined {
  const missing = step.depends_on.filter((d) => !ran.has(d));
  if (missing.length) return `step ${step.id} depends on ${missing.join(', ')}, which ${missing.length > 1 ? 'have' : 'has'} not run in transaction ${txn}`;
  if (!step.repeatable && ran.has(step.id)) return `step ${step.id} has already run in transaction ${txn} and is not repeatable`;
  return undefined;
}

/** Who approved a step run, and when (seconds since the epoch). */
export interface StepApproval {
  approved_by: string;
  approved_at: number;
}

export function intentClaim(workflow: WorkflowRecord, step: WorkflowStep, clientId: string, approval?: StepApproval): IntentClaim {
  return { workflow_id: workflow.id, workflow_version: workflow.version, workflow_step: step.id, executed_by: clientId, ...approval };
}
