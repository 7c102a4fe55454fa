import type { LookupAddress } from 'node:dns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { addressAllowed, allowList } from '../../src/events/push-target.js';
import { POLL, PUSH, PushReceiver, ssfClient, until, VERIFICATION, type SsfClient } from './support.js';

/**
 * Push endpoints are not a way to make the server call internal services: every address a push endpoint's
 * host resolves to must be public unless the operator allowed it (SSF_PUSH_ALLOW_ADDRESSES), checked when
 * the stream is created or changed and again before every delivery, which connects to the address it checked.
 * Every refusal here happens before any connection (the addresses named are never contacted).
 */
describe('Shared Signals push endpoints must be public', () => {
  let ts: TestServer;
  let client: SsfClient;
  let receiver: PushReceiver;

  beforeAll(async () => {
    ts = await startTestServer();
    client = await ssfClient(ts, 'push-ssrf');
    receiver = await new PushReceiver().start();
  });
  afterAll(async () => {
    await ts?.close();
    await receiver?.stop();
  });

  it('refuses loopback, private, link-local, shared and reserved addresses, however written, with no stream made', async () => {
    const p = receiver.port;
    const refused = [
      receiver.url, `http://localhost:${p}/events`, `http://[::1]:${p}/events`, `http://127.1:${p}/events`,
      `https://[::ffff:127.0.0.1]:${p}/events`, `https://2130706433:${p}/events`, `https://0x7f.0.0.1:${p}/events`,
      `https://0.0.0.0:${p}/events`, `https://[::]:${p}/events`, 'https://10.1.2.3/internal?key=s3cret-in-url', 'https://172.16.5.4/internal',
      'https://192.168.1.1/internal', 'https://169.254.169.254/latest/meta-data', 'https://100.64.0.1/x', 'https://[fd00::1]/x',
      'https://[fe80::1]/x', 'https://[::ffff:10.0.0.1]/x', 'https://[64:ff9b::a9fe:a9fe]/x', 'https://[2002:7f00:1::]/x',
      'https://224.0.0.1/x', 'https://255.255.255.255/x', 'https://198.18.0.1/x', 'https://receiver.invalid/x',
    ];
    for (const endpoint_url of refused) {
      const res = await client.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url, authorization_header: 'Bearer internal-service-key' } });
      expect(res.status, endpoint_url).toBe(400);
      expect(res.body.error).toBe('invalid_request');
      expect(res.body.error_description, endpoint_url).toMatch(/public addresses/);
      // The addresses a name resolved to are not told.
      if (endpoint_url.includes('localhost')) expect(res.body.error_description).not.toContain('127.0.0.1');
    }
    expect((await client.call('GET', '/ssf/streams')).body).toEqual([]);
    // Refusals are logged with the host, not the URL (its query may carry a secret) nor the header.
    expect(ts.logs.join('')).toContain('push endpoint refused');
    expect(ts.logs.join('')).not.toMatch(/s3cret-in-url|internal-service-key/);

    // Changing a stream's delivery is checked the same way, and leaves it as it was.
    const stream = (await client.call('POST', '/ssf/streams', { delivery: { method: POLL } })).body;
    for (const replace of [false, true]) {
      const res = await client.call(replace ? 'PUT' : 'PATCH', '/ssf/streams', { stream_id: stream.stream_id, delivery: { method: PUSH, endpoint_url: receiver.url } });
      expect(res.status).toBe(400);
      expect(res.body.error_description).toMatch(/public addresses/);
    }
    expect((await client.call('GET', `/ssf/streams?stream_id=${stream.stream_id}`)).body.delivery.method).toBe(POLL);
    expect((await client.call('POST', '/ssf/verify', { stream_id: stream.stream_id })).status).toBe(204);
    await new Promise((r) => setTimeout(r, 200));
    expect(receiver.received).toEqual([]);
  });

  it('classifies addresses, IPv4-mapped and embedded IPv4 included, and honours the allow-list', () => {
    const none = allowList([]);
    for (const ip of ['127.0.0.1', '10.0.0.1', '100.100.0.1', '169.254.1.1', '0.0.0.0', '::', '::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::127.0.0.1',
      'fc00::1', 'fd12:3456::1', 'fe80::1%eth0', 'ff02::1', '64:ff9b::10.0.0.1', '2002:a00:1::1', '2001::1', '2001:db8::1', 'not an ip']) {
      expect(addressAllowed(ip, none), ip).toBe(false);
    }
    for (const ip of ['93.184.216.34', '8.8.8.8', '2606:4700:4700::1111', '::ffff:93.184.216.34', '64:ff9b::808:808']) expect(addressAllowed(ip, none), ip).toBe(true);
    const some = allowList(['127.0.0.1', '10.20.0.0/16', 'fd00::/8']);
    for (const ip of ['127.0.0.1', '::ffff:127.0.0.1', '10.20.3.4', 'fd00::5']) expect(addressAllowed(ip, some), ip).toBe(true);
    for (const ip of ['127.0.0.2', '10.21.0.1', '::1', 'fc00::1']) expect(addressAllowed(ip, some), ip).toBe(false);
  });

  it('refuses a bad SSF_PUSH_ALLOW_ADDRESSES at start', async () => {
    const outcome = await startTestServer({ SSF_PUSH_ALLOW_ADDRESSES: '127.0.0.1,intranet' }).then((s) => s.close().then(() => 'started'), (e: Error) => e.message);
    expect(outcome).toMatch(/SSF_PUSH_ALLOW_ADDRESSES/);
  });
});

describe('Shared Signals push to an allowed internal receiver, checked at every delivery', () => {
  let ts: TestServer;
  let client: SsfClient;
  let receiver: PushReceiver;
  /** What the server's resolver answers for "localhost"; the system resolver would answer 127.0.0.1. */
  let answer: LookupAddress[] = [{ address: '127.0.0.2', family: 4 }];
  let lookups = 0;

  beforeAll(async () => {
    // The receiver listens on 127.0.0.2 only; nothing listens on 127.0.0.1 at its port.
    receiver = await new PushReceiver().start(0, '127.0.0.2');
    ts = await startTestServer({ SSF_PUSH_ALLOW_ADDRESSES: '127.0.0.2', SSF_PUSH_RETRY_MIN_MS: '50', SSF_PUSH_RETRY_MAX_MS: '100' }, undefined, {
      pushLookup: async (host) => {
        expect(host).toBe('localhost');
        lookups++;
        return answer;
      },
    });
    client = await ssfClient(ts, 'internal-receiver');
  });
  afterAll(async () => {
    await ts?.close();
    await receiver?.stop();
  });

  it('delivers to the address it checked, and not once the name resolves to an address not allowed', async () => {
    const url = `http://localhost:${receiver.port}/events`;
    const created = await client.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url: url } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const stream = created.body;
    // Delivered to 127.0.0.2, the address the check resolved: the connection made no lookup of its own.
    expect((await client.call('POST', '/ssf/verify', { stream_id: stream.stream_id, state: 'one' })).status).toBe(204);
    await until(() => receiver.of(VERIFICATION).length === 1, 5000, 'the first verification');
    const checked = lookups;

    // The name now resolves to a private address (DNS rebinding), or to an allowed and a private one.
    for (const [i, next] of ([[{ address: '10.0.0.1', family: 4 }], [{ address: '127.0.0.2', family: 4 }, { address: '169.254.169.254', family: 4 }]] as LookupAddress[][]).entries()) {
      answer = next;
      expect((await client.call('POST', '/ssf/verify', { stream_id: stream.stream_id, state: `refused-${i}` })).status).toBe(204);
      const row = await until(async () => {
        const r = await ts.server.db.knex('ssf_outbox').where({ stream_id: stream.stream_id, state: 'pending' }).first('last_error', 'attempts');
        return r && r.attempts > 0 ? r : undefined;
      }, 5000, 'a refused delivery attempt');
      expect(row.last_error).toMatch(/refused: .*internal address/);
      expect(receiver.of(VERIFICATION)).toHaveLength(1 + i);
      expect(lookups).toBeGreaterThan(checked);
      // Back to the allowed address: the held event goes out.
      answer = [{ address: '127.0.0.2', family: 4 }];
      await until(() => receiver.of(VERIFICATION).length === 2 + i, 5000, 'the held verification');
    }
    expect(receiver.of(VERIFICATION).map((s) => s.claims.events[VERIFICATION]!.state)).toEqual(['one', 'refused-0', 'refused-1']);
  });
});
