import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import Koa from 'koa';
import type { JWK } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { busyDatalog } from '../support/busy-datalog.js';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { postForm } from '../support/oauth-client.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { privateJwk, publicOf } from '../support/biscuit.js';
import { cli } from '../support/cli.js';
import { BISCUIT_TOKEN_TYPE, delegate } from '../../src/tokens/biscuit.js';
import { koaGuard, VerificationUnavailableError, Verifier } from '../../src/verifier/index.js';

const TOOL = 'https://tools.example/mcp';
const GRANTS = ['client_credentials', TOKEN_EXCHANGE];
/** The CLI started with every Datalog evaluation overrunning its time limit. */
const BUSY_CLI = { NODE_OPTIONS: `--import tsx --import ${fileURLToPath(new URL('../support/busy-datalog-preload.ts', import.meta.url))}` };

/**
 * A machine too busy for the Datalog time limit (made deterministic by busyDatalog): the server still starts,
 * and a valid Biscuit is answered as a transient failure to retry (503, Retry-After, a retryable error), never
 * refused; once the machine is idle again the same requests succeed.
 */
describe('Biscuits on a machine too busy for the Datalog time limit', { timeout: 120_000 }, () => {
  let ts: TestServer;
  let frontend: SecretAgent;
  let orchestrator: SecretAgent;
  let specialist: SecretAgent;
  let orchKey: JWK;
  let jwks: { keys: JWK[] };

  beforeAll(async () => {
    // The server's start-up warm-up is this process's first Datalog evaluation: it overruns its time limit.
    busyDatalog(true);
    try {
      ts = await startTestServer();
    } finally {
      busyDatalog(false);
    }
    orchKey = await privateJwk();
    frontend = await registerSecretAgent(ts, { id: agentId('busy-frontend'), scopes: ['search', 'read'], audiences: [TOOL] });
    orchestrator = await registerSecretAgent(ts, {
      id: agentId('busy-orchestrator'), grant_types: GRANTS, scopes: ['search', 'read'], audiences: [TOOL], jwks: { keys: [{ ...publicOf(orchKey), alg: 'EdDSA' }] },
      token_exchange: { may_act_for_others: true, max_budget: 5000 },
    });
    specialist = await registerSecretAgent(ts, { id: agentId('busy-specialist'), grant_types: GRANTS, scopes: ['search', 'read'], audiences: [TOOL] });
    jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: JWK[] };
  });
  afterEach(() => busyDatalog(false));
  afterAll(async () => {
    await ts?.close();
  });

  async function minted(): Promise<string> {
    const t0 = (await frontend.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const res = await exchange(orchestrator, { subject_token: t0, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 'search read', audience: TOOL });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.access_token as string;
  }

  it('the server started although the warm-up overran its time limit, and said so in a warning', () => {
    const warning = ts.logs.map((l) => JSON.parse(l) as { level: number; msg: string; err?: { message: string } }).find((l) => l.msg.startsWith('Biscuit warm-up failed'));
    expect(warning).toMatchObject({ level: 40, err: { message: 'biscuit-wasm: {"RunLimit":"Timeout"}' } });
  });

  it('the token endpoint answers 503 temporarily_unavailable with Retry-After, not a refusal; idle again, the same request succeeds', async () => {
    const biscuit = await minted();
    const t1 = (await specialist.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const form = { subject_token: biscuit, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE, actor_token: t1, actor_token_type: AT, context: 'find it' };
    busyDatalog(true);
    const busy = await exchange(orchestrator, form);
    const introspected = await postForm(`${ts.url}/token/introspection`, { token: biscuit }, orchestrator.auth);
    const revoked = await postForm(`${ts.url}/token/revocation`, { token: biscuit }, orchestrator.auth);
    busyDatalog(false);
    // Revocation does not answer 200 without having revoked anything.
    expect(revoked.status).toBe(503);
    expect(revoked.headers.get('retry-after')).toBe('1');
    expect(busy.status, JSON.stringify(busy.body)).toBe(503);
    expect(busy.body).toMatchObject({ error: 'temporarily_unavailable' });
    expect(busy.headers.get('retry-after')).toBe('1');
    // Introspection does not call a valid token inactive because the machine is busy.
    expect(introspected.status).toBe(503);
    expect(introspected.body).toMatchObject({ error: 'temporarily_unavailable' });
    expect((await exchange(orchestrator, form)).status).toBe(200);
    expect((await postForm(`${ts.url}/token/introspection`, { token: biscuit }, orchestrator.auth)).body).toMatchObject({ active: true });
  });

  it('the verifier library throws a retryable VerificationUnavailableError, and its guard answers 503 with Retry-After', async () => {
    const token = await delegate(await minted(), { delegate: specialist.id, tools: ['search'], context: 'find the order' }, orchKey, jwks);
    const verifier = new Verifier({ issuer: ts.issuer, audience: TOOL });
    const koa = new Koa();
    koa.use(koaGuard(verifier));
    koa.use((ctx) => {
      ctx.body = { ok: true };
    });
    const server: Server = createServer(koa.callback() as unknown as RequestListener);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tools`;
      busyDatalog(true);
      const err = await verifier.verifyBiscuit(token, { tools: ['search'] }).catch((e: unknown) => e);
      const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
      busyDatalog(false);
      expect(err).toBeInstanceOf(VerificationUnavailableError);
      expect(err).toMatchObject({ retryable: true, status: 503, message: expect.stringMatching(/time limit/) });
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect(await res.json()).toMatchObject({ error: 'temporarily_unavailable' });
      expect((await fetch(url, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    } finally {
      server.close();
    }
  });

  it('the CLI says what happened (never "undefined"): decode and verify on a busy machine, then idle', async () => {
    const token = await delegate(await minted(), { delegate: specialist.id, tools: ['search'], context: 'find the order' }, orchKey, jwks);
    const env = { AGENT_STS_URL: ts.url, ISSUER: '' };
    const [decoded, verified, garbage] = await Promise.all([
      cli(['decode', token, '--issuer', ts.url], { ...env, ...BUSY_CLI }),
      cli(['verify', token, '--audience', TOOL, '--tool', 'search'], { ...env, ...BUSY_CLI }),
      // A Biscuit with a bad signature, decoded by a process whose warm-up overran: the decoding's own refusal.
      cli(['decode', `${token.slice(0, 60)}${token[60] === 'A' ? 'B' : 'A'}${token.slice(61)}`, '--issuer', ts.url], { ...env, ...BUSY_CLI }),
    ]);
    for (const run of [decoded, verified, garbage]) expect(run.stderr).not.toMatch(/agent-sts: undefined/);
    expect(decoded.status, decoded.stderr).toBe(1);
    expect(decoded.stderr).toMatch(/agent-sts: Datalog evaluation ran past its time limit .*try again/);
    expect(verified.status, verified.stderr).toBe(1);
    expect(verified.stderr).toMatch(/cannot verify: Biscuit: Datalog evaluation ran past its time limit .*try again/);
    expect(garbage.status).toBe(1);
    expect(garbage.stderr).toMatch(/cannot decode the Biscuit/);
    const idle = await cli(['verify', token, '--audience', TOOL, '--tool', 'search'], env);
    expect(idle.status, idle.stderr).toBe(0);
  });
});
