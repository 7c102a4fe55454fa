import { z } from 'zod';
import { checkNoNul, RegistrationError, scopeToken } from '../identity/agent-registration.js';
import { AGENT_CHECKSUM_PATTERN } from '../identity/agent-checksum.js';
import { parseWorkloadId } from '../identity/workload-id.js';
import type { NewWorkflow, WorkflowStep } from '../storage/workflows-repo.js';

/** A workflow definition the admin API refuses (HTTP 400). */
export class WorkflowDefinitionError extends RegistrationError {
  constructor(message: string) {
    super(message);
    this.name = 'WorkflowDefinitionError';
  }
}

export const WORKFLOW_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const STEP_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const MAX_WORKFLOW_VERSION = 1_000_000;

const workflowId = z.string({ error: 'id is required' })
  .regex(WORKFLOW_ID_PATTERN, 'must be 1-128 letters, digits, dots, dashes, underscores or colons, starting with a letter or digit');
const stepId = z.string().regex(STEP_ID_PATTERN, 'a step id must be 1-64 letters, digits, dots, dashes or underscores, starting with a letter or digit');
const unique = <T extends z.ZodTypeAny>(item: T, max: number) => z.array(item).max(max).refine((a) => new Set(a).size === a.length, 'must not repeat values');

const step = z.object({
  id: stepId,
  agent: z.string({ error: 'agent is required' }).max(2048),
  tool: z.string({ error: 'tool is required' }).regex(/^[\x21-\x7E]{1,256}$/, 'tool must be 1-256 printable characters without spaces'),
  scopes: unique(scopeToken, 100).min(1, 'a step needs at least one scope'),
  depends_on: unique(stepId, 50).default([]),
  approval: z.boolean().default(false),
  repeatable: z.boolean().default(false),
}).strict();

const schema = z.object({
  id: workflowId,
  version: z.number({ error: 'version is required (an integer from 1)' }).int().min(1).max(MAX_WORKFLOW_VERSION),
  steps: z.array(step).min(1, 'a workflow needs at least one step').max(50, 'a workflow may have at most 50 steps'),
  agent_checksums: z.record(z.string().max(2048), unique(z.string().regex(AGENT_CHECKSUM_PATTERN, 'each agent checksum must be a base64url SHA-256 (43 characters)'), 50).min(1, 'list at least one checksum'))
    .default({}),
}).strict();

function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0]!;
  const path = issue.path.join('.');
  if (issue.code === 'unrecognized_keys') return `${path ? `${path}: ` : ''}unknown field${issue.keys.length > 1 ? 's' : ''}: ${issue.keys.join(', ')}`;
  return path ? `${path}: ${issue.message}` : issue.message;
}

/** A dependency cycle as `a → b → a`, or undefined. */
function findCycle(steps: WorkflowStep[]): string | undefined {
  const deps = new Map(steps.map((s) => [s.id, s.depends_on]));
  const state = new Map<string, 'visiting' | 'done'>();
  const path: string[] = [];
  const visit = (id: string): string | undefined => {
    if (state.get(id) === 'done') return undefined;
    if (state.get(id) === 'visiting') return [...path.slice(path.indexOf(id)), id].join(' → ');
    state.set(id, 'visiting');
    path.push(id);
    for (const d of deps.get(id) ?? []) {
      const cycle = visit(d);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(id, 'done');
    return undefined;
  };
  for (const s of steps) {
    const cycle = visit(s.id);
    if (cycle) return cycle;
  }
  return undefined;
}

/**
 * Validates a workflow definition from the admin API: unknown fields, repeated step ids, dependencies on
 * steps that don't exist or that form a cycle, agents outside the trust domain and checksums for agents that
 * run no step are refused.
 */
export function validateWorkflow(input: unknown, trustDomain: string): NewWorkflow {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw new WorkflowDefinitionError(firstIssue(parsed.error));
  checkNoNul(parsed.data);
  const wf = parsed.data;
  const ids = new Set<string>();
  for (const [i, s] of wf.steps.entries()) {
    if (ids.has(s.id)) throw new WorkflowDefinitionError(`steps.${i}.id: step id ${JSON.stringify(s.id)} is used twice`);
    ids.add(s.id);
    const agent = parseWorkloadId(s.agent);
    if (typeof agent === 'string') throw new WorkflowDefinitionError(`steps.${i}.agent: ${agent}`);
    if (agent.trustDomain !== trustDomain) throw new WorkflowDefinitionError(`steps.${i}.agent: trust domain ${agent.trustDomain} is not this server's (${trustDomain})`);
  }
  for (const [i, s] of wf.steps.entries()) {
    for (const d of s.depends_on) {
      if (!ids.has(d)) throw new WorkflowDefinitionError(`steps.${i}.depends_on: no step ${JSON.stringify(d)} in this workflow`);
    }
  }
  const cycle = findCycle(wf.steps);
  if (cycle) throw new WorkflowDefinitionError(`steps: depends_on forms a cycle: ${cycle}`);
  const agents = new Set(wf.steps.map((s) => s.agent));
  for (const agent of Object.keys(wf.agent_checksums)) {
    if (!agents.has(agent)) throw new WorkflowDefinitionError(`agent_checksums: ${JSON.stringify(agent)} runs no step of this workflow`);
  }
  return wf;
}
