import { randomBytes, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Context, Next } from 'koa';
import type { ApprovalRecord, ApprovalsRepo } from '../../storage/approvals-repo.js';
import type { ApproversRepo } from '../../storage/approvers-repo.js';
import type { WorkflowsRepo } from '../../storage/workflows-repo.js';
import type { ApprovalDecisions } from '../../oauth/approval-decisions.js';
import { ApprovalRefusal, cleanReason } from '../../policy/approvals.js';
import { secretHash } from '../../identity/approver-credential.js';
import type { AnonymousRefusals } from '../anonymous-refusals.js';

export const APPROVAL_PAGE_PATH = '/approve';
const COOKIE = 'agent_sts_approver';
const SESSION_TTL = 3600;

/** Every dynamic value in the page goes through this. */
const esc = (v: unknown) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const parseForm = bodyParser({ enableTypes: ['form'], formLimit: '8kb', encoding: 'utf-8' });

type Session = { approverId: string; csrf: string; token: string };

function page(ctx: Context, status: number, title: string, body: string): void {
  ctx.status = status;
  ctx.type = 'text/html; charset=utf-8';
  ctx.set('Cache-Control', 'no-store');
  ctx.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
  ctx.set('X-Frame-Options', 'DENY');
  ctx.set('X-Content-Type-Options', 'nosniff');
  // Not no-referrer: with it, browsers send `Origin: null` on the page's own form posts.
  ctx.set('Referrer-Policy', 'same-origin');
  ctx.body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${esc(title)} · agent-sts</title><style>body{font-family:sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}
.approval{border:1px solid #999;border-radius:6px;padding:1rem;margin:1rem 0}dt{font-weight:bold}dd{margin:0 0 .4rem 0}
.message{font-size:1.2rem;border-left:4px solid #36c;padding-left:.6rem}button{margin-right:.5rem}</style></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;
}

const backLink = `<p><a href="${APPROVAL_PAGE_PATH}">Back to the approvals</a></p>`;

function loginForm(notice?: string): string {
  return `${notice ? `<p role="alert">${esc(notice)}</p>` : ''}
<form method="post" action="${APPROVAL_PAGE_PATH}/login">
<p><label>Approver credential <input type="password" name="credential" autocomplete="current-password" required></label></p>
<p><button type="submit">Sign in</button></p></form>`;
}

function approvalItem(a: ApprovalRecord, tool: string | undefined, csrf: string, now: number): string {
  return `<section class="approval" id="approval-${esc(a.id)}">
<p class="message">${esc(a.binding_message)}</p>
<dl><dt>Agent</dt><dd>${esc(a.client_id)}</dd>
<dt>Workflow</dt><dd>${esc(a.workflow_id)} version ${esc(a.workflow_version)}, step ${esc(a.workflow_step)}${tool ? ` (tool ${esc(tool)})` : ''}</dd>
<dt>Scopes</dt><dd>${esc(a.scope)}</dd>${a.resource ? `<dt>Resource</dt><dd>${esc(a.resource)}</dd>` : ''}
<dt>Transaction</dt><dd>${esc(a.txn)}</dd><dt>Expires in</dt><dd>${esc(Math.max(0, a.expires_at - now))} s</dd></dl>
<form method="post" action="${APPROVAL_PAGE_PATH}/${encodeURIComponent(a.id)}">
<input type="hidden" name="csrf" value="${esc(csrf)}">
<p><label>Reason (optional) <input type="text" name="reason" maxlength="500"></label></p>
<button type="submit" name="decision" value="approve">Approve</button><button type="submit" name="decision" value="deny">Deny</button>
</form></section>`;
}

/**
 * The approval page: an approver signs in with its credential (a session cookie, HttpOnly and SameSite=Strict,
 * holding a random token whose hash is stored), sees the approvals asked of it and approves or denies them.
 * Every POST must come from this server's origin (`Origin` header) and, once signed in, carry the session's
 * form token. Server-rendered, no script; every value is HTML-escaped; no credential or token in a URL.
 */
export function approvalPageRoutes(deps: {
  approvers: ApproversRepo; approvals: ApprovalsRepo; workflows: WorkflowsRepo; decisions: ApprovalDecisions; issuer: string; now: () => number;
  anonymous: Pick<AnonymousRefusals, 'refused'>;
}): Router {
  const router = new Router();
  const origin = new URL(deps.issuer).origin;
  const secure = origin.startsWith('https:');

  const sameOriginForm = async (ctx: Context, next: Next) => {
    if (ctx.get('origin') !== origin) return page(ctx, 403, 'Refused', '<p>This form must be sent from the approval page of this server.</p>');
    if (!ctx.is('application/x-www-form-urlencoded')) return page(ctx, 415, 'Refused', '<p>The form must be sent as application/x-www-form-urlencoded.</p>');
    try {
      await parseForm(ctx, async () => {});
    } catch {
      return page(ctx, 400, 'Refused', '<p>The form could not be read.</p>');
    }
    return next();
  };
  const field = (ctx: Context, name: string): string | undefined => {
    const v = (ctx.request.body as Record<string, unknown> | undefined)?.[name];
    return typeof v === 'string' ? v : undefined;
  };
  const session = async (ctx: Context): Promise<Session | undefined> => {
    const token = ctx.cookies.get(COOKIE);
    if (!token || !/^[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
    const found = await deps.approvers.findSession(secretHash(token), deps.now());
    return found ? { approverId: found.approver.id, csrf: found.csrf_token, token } : undefined;
  };
  const csrfOk = (s: Session, given: string | undefined) => {
    const a = Buffer.from(s.csrf);
    const b = Buffer.from(given ?? '');
    return a.length === b.length && timingSafeEqual(a, b);
  };
  const setCookie = (ctx: Context, value: string, maxAge: number) => ctx.append('Set-Cookie',
    `${COOKIE}=${value}; Path=${APPROVAL_PAGE_PATH}; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`);

  router.get(APPROVAL_PAGE_PATH, async (ctx) => {
    const s = await session(ctx);
    if (!s) return page(ctx, 200, 'Sign in to approve', loginForm());
    const now = deps.now();
    const pending = await deps.approvals.pending(now, s.approverId);
    const items = await Promise.all(pending.map(async (a) => {
      const wf = await deps.workflows.find(a.workflow_id, a.workflow_version);
      return approvalItem(a, wf?.steps.find((st) => st.id === a.workflow_step)?.tool, s.csrf, now);
    }));
    page(ctx, 200, 'Approvals', `<p>Signed in as <strong>${esc(s.approverId)}</strong>.</p>
<form method="post" action="${APPROVAL_PAGE_PATH}/logout"><input type="hidden" name="csrf" value="${esc(s.csrf)}"><button type="submit">Sign out</button></form>
${items.length ? items.join('\n') : '<p>No approval is waiting for you.</p>'}`);
  });

  router.post(`${APPROVAL_PAGE_PATH}/login`, sameOriginForm, async (ctx) => {
    const credential = field(ctx, 'credential');
    const approver = credential && /^[\x21-\x7E]{1,512}$/.test(credential) ? await deps.approvers.findActiveByCredential(secretHash(credential)) : undefined;
    if (!approver) {
      await deps.anonymous.refused(ctx, { decision: 'refused', action: 'approve.login', reason: 'access_denied', detail: 'the approver credential is not valid' }).catch(() => {});
      return page(ctx, 401, 'Sign in to approve', loginForm('That credential is not valid.'));
    }
    // Sessions past their expiry go as new ones start (and with the periodic sweep).
    await deps.approvers.endExpiredSessions(deps.now());
    const token = randomBytes(32).toString('base64url');
    await deps.approvers.startSession(secretHash(token), approver.id, randomBytes(32).toString('base64url'), deps.now() + SESSION_TTL);
    setCookie(ctx, token, SESSION_TTL);
    ctx.status = 303;
    ctx.redirect(APPROVAL_PAGE_PATH);
  });

  router.post(`${APPROVAL_PAGE_PATH}/logout`, sameOriginForm, async (ctx) => {
    const s = await session(ctx);
    if (s && csrfOk(s, field(ctx, 'csrf'))) await deps.approvers.endSession(secretHash(s.token));
    setCookie(ctx, '', 0);
    ctx.status = 303;
    ctx.redirect(APPROVAL_PAGE_PATH);
  });

  router.post(`${APPROVAL_PAGE_PATH}/:id`, sameOriginForm, async (ctx) => {
    const s = await session(ctx);
    if (!s) return page(ctx, 401, 'Sign in to approve', loginForm('Your session has ended: sign in again.'));
    if (!csrfOk(s, field(ctx, 'csrf'))) return page(ctx, 403, 'Refused', `<p>The form is stale or was not sent from this page.</p>${backLink}`);
    const decision = field(ctx, 'decision');
    if (decision !== 'approve' && decision !== 'deny') return page(ctx, 400, 'Refused', `<p>Choose Approve or Deny.</p>${backLink}`);
    try {
      const a = await deps.decisions.decide(ctx.params.id!, { approverId: s.approverId }, decision === 'approve', cleanReason(field(ctx, 'reason')));
      page(ctx, 200, decision === 'approve' ? 'Approved' : 'Denied',
        `<p class="message">${decision === 'approve' ? 'Approved' : 'Denied'}: ${esc(a.binding_message)}</p>
<p>Step ${esc(a.workflow_step)} of workflow ${esc(a.workflow_id)} for ${esc(a.client_id)}.</p>${backLink}`);
    } catch (err) {
      if (!(err instanceof ApprovalRefusal)) throw err;
      page(ctx, err.status, 'Not done', `<p>${esc(err.message)}</p>${backLink}`);
    }
  });

  return router;
}
