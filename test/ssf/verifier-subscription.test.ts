import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { agentId, enc, freePort, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { postForm } from '../support/oauth-client.js';
import { clientCredentialsTokens, SsfReceiver, VerificationError, Verifier, type SecurityEvent } from '../../src/verifier/index.js';
import { eventually } from '../support/eventually.js';

/**
 * Verifiers subscribed to the server's Shared Signals stream, by poll and by push, and the guard proxy with
 * `--ssf`: a token revoked at the server (admin API, RFC 7009 cascade, agent disabled, scopes narrowed) is
 * refused at each of them within a second, long before its `exp`.
 */
const API = 'https://api.subscribed.example';

describe('verifiers subscribed to the Shared Signals stream', () => {
  let ts: TestServer;
  let rs: SecretAgent;
  let caller: SecretAgent;
  let orchestrator: SecretAgent;
  const verifiers: Record<'poll' | 'push', Verifier> = {} as never;
  const receivers: SsfReceiver[] = [];
  const events: Record<'poll' | 'push', SecurityEvent[]> = { poll: [], push: [] };
  let pushEndpoint: Server;

  const verify = (v: Verifier, token: string) => v.verifyAccessToken({ authorization: `Bearer ${token}`, method: 'GET', url: `${API}/x` });
  const refusedEverywhere = async (token: string, why: RegExp) => eventually(async () => {
    for (const v of Object.values(verifiers)) {
      const err = await verify(v, token).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(VerificationError);
      expect((err as Error).message).toMatch(why);
    }
  });
  const token = async (agent: SecretAgent = caller, form: Record<string, string> = {}) => {
    const res = await agent.token({ grant_type: 'client_credentials', resource: API, ...form });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.access_token as string;
  };

  beforeAll(async () => {
    // The push receiver listens on loopback, refused unless allowed.
    ts = await startTestServer({ SSF_PUSH_ALLOW_ADDRESSES: '127.0.0.1' });
    // The admin grants the resource server the events about tokens for API and the agents allowed API.
    rs = await registerSecretAgent(ts, { id: agentId('resource-server'), scopes: ['ssf.manage'], audiences: [ts.issuer], ssf: { resources: [API] } });
    caller = await registerSecretAgent(ts, { id: agentId('caller'), scopes: ['read', 'write'], audiences: [API], grant_types: ['client_credentials', TOKEN_EXCHANGE] });
    orchestrator = await registerSecretAgent(ts, { id: agentId('orchestrator'), scopes: ['read', 'write'], audiences: [API], grant_types: ['client_credentials', TOKEN_EXCHANGE], token_exchange: { may_act_for_others: true } });
    const accessToken = clientCredentialsTokens({ issuer: ts.issuer, clientId: rs.id, clientSecret: rs.secret, scope: 'ssf.manage', resource: ts.issuer });
    verifiers.poll = new Verifier({ issuer: ts.issuer, audience: API });
    verifiers.push = new Verifier({ issuer: ts.issuer, audience: API });
    const poll = new SsfReceiver({ verifier: verifiers.poll, accessToken, delivery: { method: 'poll' }, onEvent: (e) => events.poll.push(e) });
    let push!: SsfReceiver;
    pushEndpoint = createServer((req, res) => push.pushHandler()(req, res));
    await new Promise<void>((r) => pushEndpoint.listen(0, '127.0.0.1', r));
    push = new SsfReceiver({
      verifier: verifiers.push, accessToken, delivery: { method: 'push', endpointUrl: `http://127.0.0.1:${(pushEndpoint.address() as AddressInfo).port}/ssf` }, onEvent: (e) => events.push.push(e),
    });
    receivers.push(poll, push);
    await Promise.all(receivers.map((r) => r.start()));
  });

  afterAll(async () => {
    await Promise.all(receivers.map((r) => r.stop()));
    await new Promise<void>((r) => (pushEndpoint ? pushEndpoint.close(() => r()) : r()));
    await ts?.stop();
  });

  it('a token revoked through the admin API is refused by both within a second', async () => {
    const t = await token();
    for (const v of Object.values(verifiers)) await verify(v, t);
    const { jti, exp } = decodeJwt(t);
    expect(exp! - Date.now() / 1000).toBeGreaterThan(60);
    expect((await ts.admin('POST', `/admin/tokens/${enc(jti!)}/revoke`)).status).toBe(200);
    expect(await refusedEverywhere(t, /revoked/)).toBeLessThan(1000);
  });

  it('a cascade from an RFC 7009 revocation reaches the exchanged tokens', async () => {
    const parent = await token();
    const res = await exchange(orchestrator, { subject_token: parent, subject_token_type: AT, resource: API, scope: 'read' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const child = res.body.access_token as string;
    for (const v of Object.values(verifiers)) await verify(v, child);
    const revoke = await postForm(`${ts.url}/token/revocation`, { token: parent }, caller.auth);
    expect(revoke.status).toBe(200);
    await refusedEverywhere(child, /revoked/);
    await refusedEverywhere(parent, /revoked/);
  });

  it('narrowing an agent\'s scopes refuses its earlier wider tokens, not narrow ones', async () => {
    const agent = await registerSecretAgent(ts, { id: agentId('narrowed'), scopes: ['read', 'write'], audiences: [API] });
    const wide = await token(agent);
    const narrow = await token(agent, { scope: 'read' });
    expect((await ts.admin('PATCH', `/admin/agents/${enc(agent.id)}`, { scopes: ['read'] })).status).toBe(200);
    await refusedEverywhere(wide, /scopes its agent no longer has/);
    for (const v of Object.values(verifiers)) await verify(v, narrow);
  });

  it('disabling an agent refuses every token it holds', async () => {
    const agent = await registerSecretAgent(ts, { id: agentId('disabled'), scopes: ['read'], audiences: [API] });
    const tokens = [await token(agent), await token(agent)];
    expect((await ts.admin('DELETE', `/admin/agents/${enc(agent.id)}`)).status).toBeLessThan(300);
    for (const t of tokens) await refusedEverywhere(t, /revoked/);
    expect(events.poll.some((e) => e.subject.format === 'uri' && e.subject.uri === agent.id)).toBe(true);
  });

  it('the guard proxy with --ssf refuses a revoked token at once', async () => {
    const upstream = createServer((_req, res) => res.end('upstream'));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const port = await freePort();
    const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'guard', '--upstream', `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
      '--port', String(port), '--issuer', ts.issuer, '--resource', API, '--ssf', '--client-id', rs.id], { env: { ...process.env, LOG_LEVEL: 'silent', AGENT_STS_CLIENT_SECRET: rs.secret } });
    try {
      const t = await token();
      const call = () => fetch(`http://127.0.0.1:${port}/x`, { headers: { authorization: `Bearer ${t}` } }).catch(() => undefined);
      let first: Response | undefined;
      for (let i = 0; i < 150 && !first; i++) {
        first = await call();
        if (!first) await new Promise((r) => setTimeout(r, 100));
      }
      expect(first?.status).toBe(200);
      expect((await ts.admin('POST', `/admin/tokens/${enc(decodeJwt(t).jti!)}/revoke`)).status).toBe(200);
      await eventually(async () => expect((await call())?.status).toBe(401));
    } finally {
      child.kill();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});
