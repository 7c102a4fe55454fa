import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, agentId, POSTGRES_URL, startTestServer, type TestServer } from '../support/test-server.js';
import { registerSecretAgent, type SecretAgent } from '../support/agents.js';
import { parsePrometheus, sampleValue } from '../support/prometheus.js';
import { parseSet, poll, POLL, PUSH, PushReceiver, SESSION_REVOKED, ssfClient, STREAM_UPDATED, until, verifySet, type ReceivedSet, type SsfClient } from './support.js';

const API = 'https://api.example/orders';
// The push receivers listen on loopback, refused unless allowed.
const FAST_RETRIES = { SSF_PUSH_RETRY_MIN_MS: '50', SSF_PUSH_RETRY_MAX_MS: '200', SSF_PUSH_ALLOW_ADDRESSES: '127.0.0.1' };

const jtiOf = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()).jti as string;

describe('Shared Signals outbox: durable, ordered, exactly once per stream', () => {
  let ts: TestServer;
  let receiver: PushReceiver;
  let pusher: SsfClient;
  let poller: SsfClient;
  let app: SecretAgent;
  let pushStream: Record<string, any>;
  let pollStream: Record<string, any>;

  beforeAll(async () => {
    ts = await startTestServer({ ...FAST_RETRIES, SSF_PUSH_PAUSE_AFTER: '3600' });
    receiver = await new PushReceiver().start();
    pusher = await ssfClient(ts, 'push-receiver');
    poller = await ssfClient(ts, 'poll-receiver');
    app = await registerSecretAgent(ts, { id: agentId('app'), scopes: ['orders:read'], audiences: [API] });
    pushStream = (await pusher.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url: receiver.url }, events_requested: [SESSION_REVOKED] })).body;
    pollStream = (await poller.call('POST', '/ssf/streams', { delivery: { method: POLL }, events_requested: [SESSION_REVOKED] })).body;
  });
  afterAll(async () => {
    await ts?.close();
    await receiver?.stop();
  });

  async function revokeOne(): Promise<string> {
    const t = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const jti = jtiOf(t);
    expect((await ts.admin('POST', `/admin/tokens/${jti}/revoke`)).status).toBe(200);
    return jti;
  }

  async function backlog(): Promise<number> {
    const res = await fetch(`${ts.url}/metrics`);
    return sampleValue(parsePrometheus(await res.text()).samples, 'agent_sts_outbox_backlog');
  }

  /** Polls (acknowledging what it got) until nothing is left; returns every SET received. */
  async function drainPoll(): Promise<ReceivedSet[]> {
    const all: ReceivedSet[] = [];
    let ack: string[] = [];
    for (;;) {
      const r = await poll(ts, poller, pollStream.delivery.endpoint_url, { maxEvents: 3, returnImmediately: true, ack });
      const got = Object.values(r.sets).map((s) => parseSet(s));
      all.push(...got);
      ack = got.map((g) => g.claims.jti!);
      if (!got.length) return all;
    }
  }

  it('keeps events through a receiver outage and a server restart, and delivers each once, in order', async () => {
    const port = receiver.port;
    await receiver.stop();
    const jtis: string[] = [];
    for (let i = 0; i < 5; i++) jtis.push(await revokeOne());
    await new Promise((r) => setTimeout(r, 300));   // a few failed attempts
    expect(await backlog()).toBe(10);   // 5 events × 2 streams

    await ts.restart({ ...FAST_RETRIES, SSF_PUSH_PAUSE_AFTER: '3600' });
    for (let i = 0; i < 3; i++) jtis.push(await revokeOne());
    expect(receiver.received).toHaveLength(0);

    // The poll receiver: unacknowledged events come again, acknowledged ones never.
    const first = await poll(ts, poller, pollStream.delivery.endpoint_url, { maxEvents: 2, returnImmediately: true });
    expect(Object.keys(first.sets)).toHaveLength(2);
    expect(first.moreAvailable).toBe(true);
    const again = await poll(ts, poller, pollStream.delivery.endpoint_url, { maxEvents: 2, returnImmediately: true });
    expect(Object.keys(again.sets)).toEqual(Object.keys(first.sets));
    const polled = await drainPoll();
    expect(polled.map((s) => s.claims.sub_id.jti)).toEqual(jtis);
    expect(new Set(polled.map((s) => s.claims.jti)).size).toBe(jtis.length);

    await receiver.start(port);
    await until(() => receiver.received.length >= jtis.length, 3000, 'the backlog');
    await new Promise((r) => setTimeout(r, 300));   // nothing more comes
    expect(receiver.received.map((r) => r.claims.sub_id.jti)).toEqual(jtis);
    expect(new Set(receiver.received.map((r) => r.claims.jti)).size).toBe(jtis.length);
    for (const r of receiver.received) await verifySet(ts, r.set, pusher.agent.id);
    expect(await backlog()).toBe(0);
  });

  it('long polls: a waiting poll returns as soon as an event is committed', async () => {
    const waiting = poll(ts, poller, pollStream.delivery.endpoint_url, { maxEvents: 10, returnImmediately: false });
    await new Promise((r) => setTimeout(r, 200));
    const start = Date.now();
    const jti = await revokeOne();
    const r = await waiting;
    expect(Date.now() - start).toBeLessThan(1000);
    expect(Object.values(r.sets).map((s) => parseSet(s).claims.sub_id.jti)).toEqual([jti]);
    await poll(ts, poller, pollStream.delivery.endpoint_url, { maxEvents: 0, ack: Object.keys(r.sets) });
    await until(() => receiver.received.some((x) => x.claims.sub_id.jti === jti), 1000, 'pushed');
  });

  it('records a SET the receiver refuses (400) and goes on with the next', async () => {
    receiver.failWith = 400;
    const refusedJti = await revokeOne();
    await until(async () => (await backlog()) <= 1, 1000, 'the refused event to leave the backlog');
    receiver.failWith = undefined;
    const next = await revokeOne();
    await until(() => receiver.received.some((x) => x.claims.sub_id.jti === next), 1000, 'next event');
    expect(receiver.received.some((x) => x.claims.sub_id.jti === refusedJti)).toBe(false);
    await drainPoll();
  });

  it('pauses a stream whose receiver stays down, keeps its events, and delivers them all on resume', async () => {
    await ts.restart({ ...FAST_RETRIES, SSF_PUSH_PAUSE_AFTER: '1' });
    const port = receiver.port;
    await receiver.stop();
    receiver.received.length = 0;
    const before: string[] = [];
    for (let i = 0; i < 3; i++) before.push(await revokeOne());
    await until(async () => (await pusher.call('GET', `/ssf/status?stream_id=${pushStream.stream_id}`)).body.status === 'paused', 4000, 'the stream to pause');
    const status = (await pusher.call('GET', `/ssf/status?stream_id=${pushStream.stream_id}`)).body;
    expect(status.reason).toMatch(/receiver failed to accept events for \d+ s: the receiver could not be reached$/);
    const during: string[] = [];
    for (let i = 0; i < 3; i++) during.push(await revokeOne());

    await receiver.start(port);
    await new Promise((r) => setTimeout(r, 500));
    expect(receiver.received).toHaveLength(0);   // paused: held, not sent

    const resumed = await pusher.call('POST', '/ssf/status', { stream_id: pushStream.stream_id, status: 'enabled' });
    expect(resumed.body.status).toBe('enabled');
    await until(() => receiver.received.length >= 8, 2000, 'the held events');
    await new Promise((r) => setTimeout(r, 300));
    const got = receiver.received.map((r) => (r.type === STREAM_UPDATED ? `updated:${r.claims.events[STREAM_UPDATED]!.status}` : r.claims.sub_id.jti));
    expect(got).toEqual([...before, 'updated:paused', ...during, 'updated:enabled']);
    expect(new Set(receiver.received.map((r) => r.claims.jti)).size).toBe(8);
    await drainPoll();
    expect(await backlog()).toBe(0);
  });
});

describe.skipIf(!POSTGRES_URL)('Shared Signals with two servers on one PostgreSQL database', () => {
  let ts: TestServer;
  let second: TestServer;
  let receiver: PushReceiver;

  beforeAll(async () => {
    ts = await startTestServer(FAST_RETRIES);
    // The second server serves the same issuer (as behind a load balancer) from another port.
    second = await startTestServer({ ...FAST_RETRIES, ISSUER: ts.issuer }, ts.db);
    receiver = await new PushReceiver().start();
  });
  afterAll(async () => {
    await second?.stop();
    await ts?.close();
    await receiver?.stop();
  });

  it('delivers every event once, whichever server wrote it', async () => {
    const pusher = await ssfClient(ts, 'push-receiver');
    const stream = (await pusher.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url: receiver.url }, events_requested: [SESSION_REVOKED] })).body;
    expect(stream.stream_id).toBeTruthy();
    const app = await registerSecretAgent(ts, { id: agentId('app'), scopes: ['orders:read'], audiences: [API] });
    const servers = [ts.server.url, second.server.url];
    const jtis = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const t = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
      const jti = jtiOf(t);
      const res = await fetch(`${servers[i % 2]}/admin/tokens/${jti}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(res.status).toBe(200);
      return jti;
    }));
    await until(() => receiver.received.length >= jtis.length, 5000, 'every event');
    await new Promise((r) => setTimeout(r, 500));
    expect(receiver.received.map((r) => r.claims.sub_id.jti).sort()).toEqual([...jtis].sort());
    expect(new Set(receiver.received.map((r) => r.claims.jti)).size).toBe(jtis.length);

    // A long poll waiting at one server returns soon after the other server commits an event.
    const poller = await ssfClient(ts, 'poll-receiver');
    const pollStream = (await poller.call('POST', '/ssf/streams', { delivery: { method: POLL }, events_requested: [SESSION_REVOKED] })).body;
    const pollAtSecond = `${second.server.url}/ssf/poll/${pollStream.stream_id}`;
    const waiting = poll(ts, poller, pollAtSecond, { maxEvents: 10 });
    await new Promise((r) => setTimeout(r, 300));
    const t = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const start = Date.now();
    expect((await ts.admin('POST', `/admin/tokens/${jtiOf(t)}/revoke`)).status).toBe(200);
    const got = await waiting;
    expect(Date.now() - start).toBeLessThan(1500);
    expect(Object.values(got.sets).map((x) => parseSet(x).claims.sub_id.jti)).toEqual([jtiOf(t)]);
  });
});
