import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { enc, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, type SecretAgent } from '../support/agents.js';
import { approverApi, backchannel, CIBA, fetchAndCheck, poll, registerRefundWorkflow, type Approver } from '../support/approvals.js';

const API = 'https://orders.example/api';
const CHROMIUM = '/usr/bin/chromium';
// Without the browser the page tests fail in CI (CI=true: CI must run them) and are skipped, with the reason, elsewhere.
const IN_CI = !!process.env.CI && !['false', '0'].includes(process.env.CI);
const NO_BROWSER = !existsSync(CHROMIUM) && !IN_CI
  ? `skipped: ${CHROMIUM} is missing (install Debian's chromium package, apt-get install -y chromium, to run them; with CI=true this fails)`
  : undefined;
if (NO_BROWSER) process.stderr.write(`approval page tests in headless Chromium ${NO_BROWSER}\n`);

/** A form POST to the approval page, as a browser on `origin` would send it. */
async function formPost(url: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  return fetch(url, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(form).toString() });
}

describe('the approval page', () => {
  let ts: TestServer;
  let reader: SecretAgent;
  let checker: SecretAgent;
  let payer: SecretAgent;
  let alice: Approver;
  let bob: Approver;

  const firstTwo = () => fetchAndCheck({ reader, checker });
  const ask = async (txn: string, message: string) => {
    const res = await backchannel(ts, payer, { scope: 'openid payments:write', login_hint: alice.id, binding_message: message, workflow_id: 'refund', workflow_step: 'pay', txn });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.auth_req_id as string;
  };
  /** Signs in over plain HTTP and returns the session cookie and the page's form token. */
  const signIn = async (approver: Approver) => {
    const res = await formPost(`${ts.url}/approve/login`, { credential: approver.credential }, { origin: ts.url });
    expect(res.status).toBe(303);
    const cookie = res.headers.get('set-cookie')!.split(';')[0]!;
    const html = await (await fetch(`${ts.url}/approve`, { headers: { cookie } })).text();
    const csrf = /name="csrf" value="([^"]+)"/.exec(html)![1]!;
    return { cookie, csrf, html };
  };

  beforeAll(async () => {
    ts = await startTestServer({ APPROVAL_POLL_INTERVAL: '1' });
    ({ reader, checker, payer, alice, bob } = await registerRefundWorkflow(ts, {
      api: API, payer: { grant_types: [CIBA], scopes: ['payments:write'] },
      fourth: (a) => ({ id: 'notify', agent: a.checker.id, tool: 'notify.send', scopes: ['orders:read'], depends_on: ['pay'] }),
    }));
  });
  afterAll(async () => {
    await ts?.close();
  });

  describe.skipIf(!!NO_BROWSER)(NO_BROWSER ? `in headless Chromium (${NO_BROWSER})` : 'in headless Chromium', () => {
    let browser: Browser;
    beforeAll(async () => {
      if (!existsSync(CHROMIUM)) {
        throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium) to run the approval page test`);
      }
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    });
    afterAll(async () => {
      await browser?.close();
    });

    it('runs the four-step workflow with the third step approved on the page', async () => {
      const { t2, txn } = await firstTwo();
      const authReqId = await ask(txn, 'Refund order 1234: 20 EUR');
      const page = await browser.newPage();
      page.setDefaultTimeout(8000);
      await page.goto(`${ts.url}/approve`);
      await page.fill('input[name=credential]', alice.credential);
      await page.click('button[type=submit]');
      await page.waitForURL(`${ts.url}/approve`);
      expect(await page.textContent('body')).toContain(`Signed in as ${alice.id}`);
      const section = page.locator('section.approval', { hasText: 'Refund order 1234: 20 EUR' });
      expect(await section.textContent()).toContain('payments.refund');
      expect((await poll(payer, authReqId)).body.error).toBe('authorization_pending');
      await section.locator('input[name=reason]').fill('checked the order');
      await section.locator('button[value=approve]').click();
      await page.waitForSelector('text=Approved: Refund order 1234: 20 EUR');
      const cookies = await page.context().cookies();
      expect(cookies).toEqual([expect.objectContaining({ name: 'agent_sts_approver', httpOnly: true, sameSite: 'Strict', path: '/approve' })]);
      await page.close();

      await new Promise((r) => setTimeout(r, 1000));
      const res = await poll(payer, authReqId);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const { payload } = await jwtVerify(res.body.access_token, createRemoteJWKSet(new URL(`${ts.url}/jwks`)), { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
      expect(payload).toMatchObject({ txn, client_id: payer.id, intent: { workflow_step: 'pay', executed_by: payer.id, approved_by: alice.id } });
      const notify = await exchange(checker, { subject_token: t2, subject_token_type: AT, workflow_id: 'refund', workflow_step: 'notify' });
      expect(notify.status, JSON.stringify(notify.body)).toBe(200);
      const run = (await ts.admin('GET', `/admin/workflows/refund/runs/${enc(txn)}`)).body;
      expect(run.steps.map((s: { status: string }) => s.status)).toEqual(['issued', 'issued', 'issued', 'issued']);
      expect(run.steps[2].approvals).toEqual([expect.objectContaining({ status: 'approved', decided_by: alice.id, reason: 'checked the order', token_jti: payload.jti })]);
    });
  });

  it('escapes what it shows and keeps credentials and tokens out of URLs and logs', async () => {
    const { txn } = await firstTwo();
    const authReqId = await ask(txn, '<script>alert(1)</script> & "quotes"');
    const { html, cookie } = await signIn(alice);
    expect(html).toContain('&#60;script&#62;alert(1)&#60;/script&#62; &#38; &#34;quotes&#34;');
    expect(html).not.toContain('<script>');
    expect(html).not.toContain(authReqId);
    const res = await fetch(`${ts.url}/approve`, { headers: { cookie } });
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(res.headers.get('cache-control')).toBe('no-store');
    const logs = ts.logs.join('');
    for (const secret of [alice.credential, cookie.split('=')[1]!, authReqId]) expect(logs).not.toContain(secret);
  });

  it('refuses cross-origin and token-less forms, a wrong credential and a decision for another approver', async () => {
    const { txn } = await firstTwo();
    await ask(txn, 'Refund order 99');
    const id = ((await approverApi(ts, alice.credential, 'GET', '/approvals')).body.approvals as { id: string; txn: string }[]).find((a) => a.txn === txn)!.id;
    expect((await formPost(`${ts.url}/approve/login`, { credential: alice.credential })).status).toBe(403);
    expect((await formPost(`${ts.url}/approve/login`, { credential: alice.credential }, { origin: 'https://evil.example' })).status).toBe(403);
    const bad = await formPost(`${ts.url}/approve/login`, { credential: 'apv_wrong' }, { origin: ts.url });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('set-cookie')).toBeNull();

    const a = await signIn(alice);
    expect((await formPost(`${ts.url}/approve/${id}`, { decision: 'approve', csrf: a.csrf }, { cookie: a.cookie, origin: 'https://evil.example' })).status).toBe(403);
    expect((await formPost(`${ts.url}/approve/${id}`, { decision: 'approve' }, { cookie: a.cookie, origin: ts.url })).status).toBe(403);
    expect((await formPost(`${ts.url}/approve/${id}`, { decision: 'approve', csrf: a.csrf }, { origin: ts.url })).status).toBe(401);
    const b = await signIn(bob);
    expect(b.html).toContain('No approval is waiting for you.');
    const wrong = await formPost(`${ts.url}/approve/${id}`, { decision: 'approve', csrf: b.csrf }, { cookie: b.cookie, origin: ts.url });
    expect(wrong.status).toBe(403);
    expect(await wrong.text()).toContain('was asked of another approver');
    expect((await approverApi(ts, alice.credential, 'GET', `/approvals/${id}`)).body.status).toBe('pending');

    const denied = await formPost(`${ts.url}/approve/${id}`, { decision: 'deny', csrf: a.csrf, reason: 'no' }, { cookie: a.cookie, origin: ts.url });
    expect(denied.status).toBe(200);
    expect((await approverApi(ts, alice.credential, 'GET', `/approvals/${id}`)).body).toMatchObject({ status: 'denied', decided_by: alice.id, reason: 'no' });
    // Signing out ends the session on the server.
    expect((await formPost(`${ts.url}/approve/logout`, { csrf: a.csrf }, { cookie: a.cookie, origin: ts.url })).status).toBe(303);
    expect(await (await fetch(`${ts.url}/approve`, { headers: { cookie: a.cookie } })).text()).toContain('name="credential"');
  });
});

describe('admin API: approvers', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('registers approvers with a credential shown once, replaces and disables them', async () => {
    const created = await ts.admin('POST', '/admin/approvers', { id: 'carol@example.com' });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ id: 'carol@example.com', status: 'active', created_at: expect.any(String), credential: expect.stringMatching(/^apv_[A-Za-z0-9_-]{43}$/) });
    const listed = await ts.admin('GET', '/admin/approvers');
    expect(listed.body.approvers).toEqual([{ id: 'carol@example.com', status: 'active', created_at: expect.any(String) }]);
    expect(JSON.stringify(listed.body)).not.toContain(created.body.credential);
    expect((await ts.admin('POST', '/admin/approvers', { id: 'carol@example.com' })).status).toBe(409);
    expect((await ts.admin('POST', '/admin/approvers', { id: 'admin' })).body).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('reserved') });
    expect((await ts.admin('POST', '/admin/approvers', { id: 'has space' })).status).toBe(400);
    expect((await ts.admin('POST', '/admin/approvers', { id: 'dave', role: 'x' })).body).toMatchObject({ error: 'invalid_request', error_description: 'unknown field: role' });
    expect((await approverApi(ts, created.body.credential, 'GET', '/approvals')).status).toBe(200);

    const replaced = await ts.admin('POST', `/admin/approvers/${enc('carol@example.com')}/credential`);
    expect(replaced.status).toBe(200);
    expect((await approverApi(ts, created.body.credential, 'GET', '/approvals')).status).toBe(401);
    expect((await approverApi(ts, replaced.body.credential, 'GET', '/approvals')).status).toBe(200);

    expect((await ts.admin('DELETE', `/admin/approvers/${enc('carol@example.com')}`)).body).toMatchObject({ status: 'disabled' });
    expect((await approverApi(ts, replaced.body.credential, 'GET', '/approvals')).status).toBe(401);
    expect((await ts.admin('DELETE', '/admin/approvers/nobody')).status).toBe(404);
    expect((await fetch(`${ts.url}/admin/approvers`)).status).toBe(401);
  });
});
