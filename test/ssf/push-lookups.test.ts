import type { LookupAddress } from 'node:dns';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { hostsFileAddresses, LookupGate, systemLookup } from '../../src/events/push-target.js';
import { parseSet, POLL, PUSH, PushReceiver, ssfClient, until, VERIFICATION, type SsfClient } from './support.js';

/**
 * Push endpoint names are looked up in bounded turns that a client cannot keep: a lookup its caller gave up on
 * frees its turn at once, a waiting one leaves the queue, the stream API makes one lookup per client at a time,
 * and deliveries have turns of their own, so clients naming hosts whose DNS never answers cannot hold up any
 * other receiver's events.
 */
describe('Shared Signals push endpoint lookups cannot be starved', () => {
  let ts: TestServer;
  let victim: SsfClient;
  let receiver: PushReceiver;
  let hanging = 0;
  const inFlight = new Map<string, number>();
  let mostAtOnce = 0;
  const TIMEOUT_MS = 300;

  beforeAll(async () => {
    receiver = await new PushReceiver().start();
    ts = await startTestServer({
      SSF_PUSH_ALLOW_ADDRESSES: '127.0.0.1', SSF_PUSH_ALLOW_HTTP: 'true', SSF_PUSH_TIMEOUT_MS: String(TIMEOUT_MS),
      SSF_PUSH_RETRY_MIN_MS: '50', SSF_PUSH_RETRY_MAX_MS: '100',
    }, undefined, {
      // The attacker's names never resolve (a DNS server that never answers), and the lookup ignores being given up.
      pushLookup: (host, signal): Promise<LookupAddress[]> => {
        if (host === 'receiver.victim.example') return Promise.resolve([{ address: '127.0.0.1', family: 4 }]);
        if (host.endsWith('.slow.attacker.example')) {
          hanging++;
          // Lookups of each attacker in progress at once: from the call until it is given up.
          const who = host.split('-')[0]!;
          const now = (inFlight.get(who) ?? 0) + 1;
          inFlight.set(who, now);
          mostAtOnce = Math.max(mostAtOnce, now);
          signal?.addEventListener('abort', () => inFlight.set(who, inFlight.get(who)! - 1), { once: true });
          return new Promise(() => {});
        }
        return Promise.reject(Object.assign(new Error('not found'), { code: 'ENOTFOUND' }));
      },
    });
    victim = await ssfClient(ts, 'lookup-victim');
  });
  afterAll(async () => {
    await ts?.close();
    await receiver?.stop();
  });

  it('delivers another receiver\'s events, and answers every request in bounded time, while clients flood it with names that never resolve', async () => {
    const endpoint_url = `http://receiver.victim.example:${receiver.port}/events`;
    const created = await victim.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const streamId = created.body.stream_id as string;

    // Six agents with ssf.manage, each sending 20 stream changes at once, each naming a host that never resolves.
    const attackers = await Promise.all(Array.from({ length: 6 }, (_, i) => ssfClient(ts, `lookup-attacker-${i}`)));
    const streams = await Promise.all(attackers.map(async (a) => (await a.call('POST', '/ssf/streams', { delivery: { method: POLL } })).body.stream_id as string));
    const started = Date.now();
    const attack = attackers.flatMap((a, i) => Array.from({ length: 20 }, (_, j) => {
      const body = { stream_id: streams[i], delivery: { method: PUSH, endpoint_url: `https://h${i}-${j}.slow.attacker.example/` } };
      return (j % 2 ? a.call('PATCH', '/ssf/streams', body) : a.call('POST', '/ssf/streams', body)).then((r) => ({ ...r, ms: Date.now() - started }));
    }));
    await until(() => hanging >= 2, 5000, 'the attackers\' lookups hanging');

    // While they hang, the victim's events are delivered: the check before each delivery has turns of its own.
    expect((await victim.call('POST', '/ssf/verify', { stream_id: streamId, state: 'during' })).status).toBe(204);
    await until(() => receiver.of(VERIFICATION).length === 1, 5000, 'the verification pushed during the flood');

    const answers = await Promise.all(attack);
    // Each refused in bounded time: a lookup timed out (400), the client's own lookup in progress (429), or no turn (503).
    for (const a of answers) {
      expect([400, 429, 503], JSON.stringify(a.body)).toContain(a.status);
      expect(a.ms).toBeLessThan(2 * TIMEOUT_MS + 10_000);
    }
    // One lookup per client at a time: the others meanwhile were refused at once.
    expect(mostAtOnce).toBe(1);
    expect(answers.filter((a) => a.status === 429).length).toBeGreaterThan(0);
    const busy = answers.find((a) => a.status === 429)!;
    expect(busy.body.error).toBe('temporarily_unavailable');
    expect(busy.headers.get('retry-after')).toBe('1');
    expect(answers.filter((a) => a.status === 400).every((a) => /public addresses/.test(a.body.error_description))).toBe(true);
    // No attacker stream became a push stream.
    for (const [i, a] of attackers.entries()) expect((await a.call('GET', `/ssf/streams?stream_id=${streams[i]}`)).body.delivery.method).toBe(POLL);

    // The lookups still hang, yet their turns are free: the stream API checks endpoints again, for anyone.
    expect((await victim.call('PATCH', '/ssf/streams', { stream_id: streamId, delivery: { method: PUSH, endpoint_url } })).status).toBe(200);
    const again = await attackers[0]!.call('PATCH', '/ssf/streams', { stream_id: streams[0], delivery: { method: PUSH, endpoint_url } });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect((await victim.call('POST', '/ssf/verify', { stream_id: streamId, state: 'after' })).status).toBe(204);
    await until(() => receiver.of(VERIFICATION).length === 2, 5000, 'the verification pushed after the flood');
  });
});

describe('push endpoint lookup turns', () => {
  it('frees a turn when its caller gives up, though the lookup never ends, and drops a waiter that gave up', async () => {
    const gate = new LookupGate({ running: 1, waiting: 1, sameKey: 'wait' });
    const never = () => new Promise<never>(() => {});
    const first = gate.run('a', 100, 100, never).catch((e: { code?: string }) => e.code);
    // Waits behind the first, gives up waiting first (30 ms), and leaves the queue.
    const second = gate.run('b', 30, 100, never).catch((e: { code?: string }) => e.code);
    expect(gate.load).toEqual({ running: 1, waiting: 1 });
    expect(await second).toBe('ETIMEOUT');
    expect(gate.load).toEqual({ running: 1, waiting: 0 });
    // The queue has room again, and the turn is free once the first is given up.
    const third = gate.run('c', 500, 100, async () => 'done');
    expect(await first).toBe('ETIMEOUT');
    expect(await third).toBe('done');
    expect(gate.load).toEqual({ running: 0, waiting: 0 });
  });

  it('refuses a client\'s second lookup while its first runs, when so configured, and no more than it may queue', async () => {
    const gate = new LookupGate({ running: 1, waiting: 1, sameKey: 'refuse' });
    let end!: () => void;
    const first = gate.run('a', 100, 1000, () => new Promise<void>((r) => { end = r; }));
    await expect(gate.run('a', 100, 100, async () => 1)).rejects.toMatchObject({ code: 'EBUSY', client: true });
    const queued = gate.run('b', 1000, 100, async () => 2);
    await expect(gate.run('c', 100, 100, async () => 3)).rejects.toMatchObject({ code: 'EBUSY', client: false });
    end();
    await first;
    expect(await queued).toBe(2);
  });
});

describe('the system resolver for push endpoints', () => {
  let dns: Socket;
  let queries = 0;
  beforeAll(async () => {
    // A DNS server on loopback that never answers.
    dns = createSocket('udp4').on('message', () => { queries++; });
    await new Promise<void>((r) => dns.bind(0, '127.0.0.1', r));
  });
  afterAll(() => new Promise<void>((r) => dns.close(() => r())));

  it('gives up a DNS query that never gets an answer when its caller does', async () => {
    const servers = [`127.0.0.1:${(dns.address() as AddressInfo).port}`];
    const started = Date.now();
    const outcome = await systemLookup('never.answers.example', AbortSignal.timeout(200), servers).then(() => 'resolved', (e: { code?: string }) => e.code);
    expect(outcome).toBe('ECANCELLED');
    expect(Date.now() - started).toBeLessThan(1000);
    expect(queries).toBeGreaterThan(0);
  });

  it('answers localhost and names under it with loopback without asking DNS', async () => {
    const servers = [`127.0.0.1:${(dns.address() as AddressInfo).port}`];
    const before = queries;
    // From the hosts file when it lists the name, else both loopback addresses.
    expect(await systemLookup('localhost', AbortSignal.timeout(200), servers)).toContainEqual({ address: '127.0.0.1', family: 4 });
    expect(await systemLookup('api.receiver.localhost.', AbortSignal.timeout(200), servers)).toEqual([{ address: '127.0.0.1', family: 4 }, { address: '::1', family: 6 }]);
    expect(queries).toBe(before);
  });

  it('reads a name\'s addresses from the hosts file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hosts-'));
    const file = join(dir, 'hosts');
    await writeFile(file, '# comment\n127.0.0.1 localhost\n10.1.2.3\treceiver.internal  alias # note\nfd00::7 Receiver.Internal\n10.1.2.3 receiver.internal\n');
    expect(await hostsFileAddresses('receiver.internal.', file)).toEqual([{ address: '10.1.2.3', family: 4 }, { address: 'fd00::7', family: 6 }]);
    expect(await hostsFileAddresses('alias', file)).toEqual([{ address: '10.1.2.3', family: 4 }]);
    expect(await hostsFileAddresses('elsewhere', file)).toEqual([]);
    expect(await hostsFileAddresses('x', join(dir, 'missing'))).toEqual([]);
    await rm(dir, { recursive: true });
  });
});

/**
 * Streams are delivered independently, each for a turn of its own: one client's receiver that accepts each SET
 * just inside the push timeout, with a backlog of events, delays only its own stream.
 */
describe('a slow receiver with a backlog delays only its own stream', () => {
  let ts: TestServer;
  let victimReceiver: PushReceiver;
  let slow: Server;
  let slowPort = 0;
  let slowGot = 0;
  const slowStates: unknown[] = [];
  const TIMEOUT_MS = 2000;
  const SLOW_MS = 1500;

  beforeAll(async () => {
    victimReceiver = await new PushReceiver().start();
    slow = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        slowGot++;
        slowStates.push(parseSet(Buffer.concat(chunks).toString()).claims.events[VERIFICATION]?.state);
        setTimeout(() => { res.writeHead(202); res.end(); }, SLOW_MS);
      });
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    slowPort = (slow.address() as AddressInfo).port;
    // No verification limit here: the backlog is what is tested.
    ts = await startTestServer({
      SSF_PUSH_ALLOW_ADDRESSES: '127.0.0.1', SSF_PUSH_ALLOW_HTTP: 'true', SSF_PUSH_TIMEOUT_MS: String(TIMEOUT_MS), SSF_MIN_VERIFICATION_INTERVAL: '0',
    });
  });
  afterAll(async () => {
    await ts?.close();
    await victimReceiver?.stop();
    await new Promise<void>((r) => slow.close(() => r()));
  });

  it('delivers another receiver\'s verification promptly, and the slow stream\'s events in order', async () => {
    const victim = await ssfClient(ts, 'hol-victim');
    const attacker = await ssfClient(ts, 'hol-attacker');
    const v = await victim.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url: victimReceiver.url } });
    expect(v.status, JSON.stringify(v.body)).toBe(201);
    const a = await attacker.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url: `http://127.0.0.1:${slowPort}/events` } });
    expect(a.status, JSON.stringify(a.body)).toBe(201);

    expect((await victim.call('POST', '/ssf/verify', { stream_id: v.body.stream_id, state: 'control' })).status).toBe(204);
    await until(() => victimReceiver.of(VERIFICATION).length === 1, 5000, 'control verification');

    // The attacker queues 10 verifications on its own stream, each accepted after 1.5 s.
    for (let i = 0; i < 10; i++) expect((await attacker.call('POST', '/ssf/verify', { stream_id: a.body.stream_id, state: `a${i}` })).status).toBe(204);
    await until(() => slowGot >= 1, 5000, 'the slow receiver busy');

    const started = Date.now();
    expect((await victim.call('POST', '/ssf/verify', { stream_id: v.body.stream_id, state: 'during' })).status).toBe(204);
    await until(() => victimReceiver.of(VERIFICATION).length === 2, 25_000, 'the victim verification');
    // Within about one push timeout, not after the attacker's backlog (15 s).
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS + 1000);
    expect(slowGot).toBeLessThan(10);

    // The slow stream's events still all arrive, once each (its turns end after one push timeout and resume).
    await until(() => slowGot >= 10, 30_000, 'the slow stream drained');
    await new Promise((r) => setTimeout(r, SLOW_MS + 500));
    expect(slowGot).toBe(10);
    expect(slowStates).toEqual(Array.from({ length: 10 }, (_, i) => `a${i}`));
  }, 60_000);
});
