import { z } from 'zod';
import { RegistrationError } from '../identity/agent-registration.js';
import type { ApprovalRecord } from '../storage/approvals-repo.js';

/** Approver ids: what a CIBA `login_hint` names (an e-mail address, a user name). `admin` is the admin token's. */
export const APPROVER_ID_PATTERN = /^[\x21-\x7E]{1,256}$/;
export const ADMIN_DECIDER = 'admin';

/** Who decides on an approval: a registered approver, or the admin token. */
export type Decider = { approverId: string } | { admin: true };

export const deciderName = (who: Decider): string => ('admin' in who ? ADMIN_DECIDER : who.approverId);

/** An approval decision refused: `status` is the HTTP status. */
export class ApprovalRefusal extends Error {
  constructor(readonly status: 403 | 404 | 409, readonly code: string, message: string) {
    super(message);
    this.name = 'ApprovalRefusal';
  }
}

const approverSchema = z.object({
  id: z.string({ error: 'id is required' }).regex(APPROVER_ID_PATTERN, 'id must be 1-256 printable characters without spaces (e.g. an e-mail address)')
    .refine((id) => id !== ADMIN_DECIDER, `"${ADMIN_DECIDER}" is reserved for the admin token`),
}).strict();

/** Validates an approver registration (admin API). */
export function validateApprover(input: unknown): { id: string } {
  const parsed = approverSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RegistrationError(issue.code === 'unrecognized_keys' ? `unknown field: ${issue.keys.join(', ')}` : issue.message);
  }
  return parsed.data;
}

const decisionSchema = z.object({ reason: z.string().max(500, 'reason must be at most 500 characters').optional() }).strict();

/** The optional body of an approve or deny request: `{"reason": "..."}`. */
export function readDecisionBody(input: unknown): string | undefined {
  const parsed = decisionSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RegistrationError(issue.code === 'unrecognized_keys' ? `unknown field: ${issue.keys.join(', ')}` : issue.message);
  }
  return cleanReason(parsed.data.reason);
}

/** A reason as stored: control characters dropped, trimmed, at most 500 characters; undefined when empty. */
export function cleanReason(reason: string | undefined): string | undefined {
  // eslint-disable-next-line no-control-regex
  const r = reason?.replace(/[\u0000-\u001f\u007f]/g, ' ').trim().slice(0, 500);
  return r || undefined;
}

/** A binding message states the step's intent to the approver: 1-256 characters, no control characters. */
// eslint-disable-next-line no-control-regex
export const BINDING_MESSAGE_PATTERN = /^[^\u0000-\u001f\u007f]{1,256}$/u;

/** An approver may see and decide only the approvals asked of it (its `login_hint`); the admin token, any. */
export function maySee(approval: ApprovalRecord, who: Decider): boolean {
  return 'admin' in who || approval.approver_id === who.approverId;
}

/** Why `who` may not decide this approval now, or undefined. Expiry is the caller's (it changes the record). */
export function decisionRefusal(approval: ApprovalRecord, who: Decider): ApprovalRefusal | undefined {
  if (!maySee(approval, who)) return new ApprovalRefusal(403, 'access_denied', `approval ${approval.id} was asked of another approver`);
  if (approval.status !== 'pending') return new ApprovalRefusal(409, 'conflict', `approval ${approval.id} is already ${approval.status}`);
  return undefined;
}
