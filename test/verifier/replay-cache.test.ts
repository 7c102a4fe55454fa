import { createHash, randomUUID } from 'node:crypto';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Koa from 'koa';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { registerSecretAgent, type SecretAgent } from '../support/agents.js';
import { newAgentKey, witByJoinToken, type AgentKey } from '../support/workload.js';
import { signAsServer } from '../support/forgery.js';
import { createWpt } from '../../src/tokens/wpt.js';
import { koaGuard, MemoryReplayCache, ReplayCacheFullError, Verifier } from '../../src/verifier/index.js';
import { SecuritySignals, TOKEN_CLAIMS_CHANGE, type SecurityEvent } from '../../src/verifier/security-signals.js';

const API = 'https://api.example.com';

describe('MemoryReplayCache', () => {
  let t = 1000;
  const clock = () => t;

  it('refuses an identifier through the last second its proof is accepted, and forgets it only after', () => {
    t = 1000;
    const cache = new MemoryReplayCache(10, clock);
    expect(cache.claim('a', 1010)).toBe(true);
    expect(cache.claim('a', 1010)).toBe(false);
    t = 1010;
    expect(cache.claim('a', 1010)).toBe(false);
    t = 1011;
    expect(cache.claim('a', 1020)).toBe(true);
  });

  it('keeps a fractional expiry at least that long', () => {
    t = 1000;
    const cache = new MemoryReplayCache(10, clock);
    expect(cache.claim('b', 1010.5)).toBe(true);
    t = 1011;
    expect(cache.claim('b', 1020)).toBe(false);
    t = 1012;
    expect(cache.claim('b', 1020)).toBe(true);
  });

  it('when full of live entries, refuses a new identifier with ReplayCacheFullError and forgets none', () => {
    t = 1000;
    const cache = new MemoryReplayCache(3, clock);
    for (const id of ['a', 'b', 'c']) expect(cache.claim(id, 1060)).toBe(true);
    let thrown: unknown;
    try {
      cache.claim('d', 1060);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ReplayCacheFullError);
    expect((thrown as ReplayCacheFullError).retryAfterSeconds).toBe(61);
    for (const id of ['a', 'b', 'c']) expect(cache.claim(id, 1060)).toBe(false);
    // Once entries can no longer be accepted, they make room.
    t = 1061;
    expect(cache.claim('d', 1120)).toBe(true);
    expect(cache.claim('d', 1120)).toBe(false);
  });
});

describe('the verifier\'s replay cache behind its middleware', () => {
  let ts: TestServer;
  let agent: SecretAgent;
  let key: AgentKey;
  let wit: string;
  const apps: Server[] = [];

  /** A resource guarded by `verifier`, answering 200 with what it verified. */
  async function guarded(verifier: Verifier): Promise<string> {
    const koa = new Koa();
    koa.use(koaGuard(verifier));
    koa.use((ctx) => {
      ctx.body = ctx.state.agent;
    });
    const server = createServer(koa.callback() as unknown as RequestListener);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    apps.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
  const call = (url: string, headers: Record<string, string>) => fetch(url, { headers });
  const nowSec = () => Math.floor(Date.now() / 1000);
  const workload = async (url: string, opts: { now?: number; lifetime?: number } = {}) => ({
    'workload-identity-token': wit,
    'workload-proof-token': await createWpt({ wit, key: key.privateKey, alg: key.alg, audience: url, ...opts }),
  });

  beforeAll(async () => {
    ts = await startTestServer();
    agent = await registerSecretAgent(ts, { id: agentId('replay-verifier'), audiences: [API], attestors: [{ type: 'join_token' }] });
    key = await newAgentKey();
    wit = await witByJoinToken(ts, agent.id, key);
  });
  afterAll(async () => {
    for (const s of apps) await new Promise((r) => s.close(r));
    await ts?.close();
  });

  it('accepts a WPT past its exp inside the verifier\'s clock tolerance once, and refuses it again', async () => {
    const url = `${await guarded(new Verifier({ issuer: ts.issuer, audience: API, clockTolerance: 30 }))}/read`;
    // Expired 10 s ago: inside a 30 s tolerance, and claimed until exp + 30 s.
    const headers = await workload(url, { now: nowSec() - 60, lifetime: 50 });
    const first = await call(url, headers);
    expect(first.status, await first.clone().text()).toBe(200);
    const replay = await call(url, headers);
    expect(replay.status).toBe(401);
    expect((await replay.json() as { error_description: string }).error_description).toMatch(/already used/);
  });

  it('a full replay cache refuses with 503 temporarily_unavailable and Retry-After, and forgets no live proof', async () => {
    const url = `${await guarded(new Verifier({ issuer: ts.issuer, audience: API, replayCache: new MemoryReplayCache(2) }))}/read`;
    const first = await workload(url);
    expect((await call(url, first)).status).toBe(200);
    expect((await call(url, await workload(url))).status).toBe(200);
    const full = await call(url, await workload(url));
    expect(full.status).toBe(503);
    expect(Number(full.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(full.headers.get('cache-control')).toMatch(/no-store/);
    expect(await full.json()).toMatchObject({ error: 'temporarily_unavailable', error_description: expect.stringMatching(/replay cache is full/) });
    const replay = await call(url, first);
    expect(replay.status).toBe(401);
    expect((await replay.json() as { error_description: string }).error_description).toMatch(/already used/);
  });

  it('refuses a DPoP proof replayed in the last second it is accepted (iat + max age + tolerance)', async () => {
    const url = `${await guarded(new Verifier({ issuer: ts.issuer, audience: API }))}/read`;
    const keys = await generateKeyPair('ES256');
    const jwk = await exportJWK(keys.publicKey);
    const bound = await signAsServer(ts, { iss: ts.issuer, sub: agent.id, aud: API, jti: randomUUID(), iat: nowSec(), exp: nowSec() + 120, cnf: { jkt: await calculateJwkThumbprint(jwk) } });
    // A proof for the next second, 60 s (max age) + 5 s (tolerance) old then; both calls are made inside that second.
    const now = nowSec() + 1;
    const proof = await new SignJWT({ htm: 'GET', htu: url, iat: now - 60 - 5, jti: randomUUID(), ath: createHash('sha256').update(bound).digest('base64url') })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk }).sign(keys.privateKey);
    const headers = { authorization: `DPoP ${bound}`, dpop: proof };
    await new Promise((r) => setTimeout(r, now * 1000 - Date.now() + 10));
    const first = await call(url, headers);
    const replay = await call(url, headers);
    expect(nowSec(), 'both calls in one second').toBe(now);
    expect(first.status, await first.clone().text()).toBe(200);
    expect(replay.status).toBe(401);
    expect((await replay.json() as { error_description: string }).error_description).toMatch(/replayed/);
  });
});

describe('a security event delivered again', () => {
  it('an older token-claims change, replayed after a newer one, does not widen what the newer one narrowed', () => {
    const ISSUER = 'https://sts.example';
    const AGENT = 'spiffe://agent-sts.test/agents/a';
    const T = 1_800_000_000;
    const change = (at: number, scope: string): SecurityEvent => ({ jti: `e${at}`, iat: at, type: TOKEN_CLAIMS_CHANGE, subject: { format: 'uri', uri: AGENT }, event: { event_timestamp: at, claims: { scope } } });
    const signals = new SecuritySignals(ISSUER, 86_400);
    const older = change(T - 100, 'a b');
    signals.apply(older, T);
    signals.apply(change(T - 10, 'a'), T);
    // Issued between the two changes with scope b: the newer change refuses it.
    const token = { type: 'access_token' as const, jti: 't', iat: T - 50, parties: [AGENT], clientId: AGENT, scopes: ['b'] };
    expect(signals.refusal(token)).toMatch(/scopes/);
    signals.apply(older, T + 1);
    expect(signals.refusal(token)).toMatch(/scopes/);
  });
});
