import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';
import { registerSecretAgent, type SecretAgent } from '../support/agents.js';
import { decodeJwt } from 'jose';
import { newAgentKey, postJson, tokenWithWit, witByJoinToken } from '../support/workload.js';
import { registerApprover } from '../support/approvals.js';
import { parsePrometheus, sampleValue, type Sample } from '../support/prometheus.js';
import { eventually } from '../support/eventually.js';
import { sourceAddress } from '../../src/http/anonymous-refusals.js';

const API = 'https://api.example.com';

interface Event { id: number; decision: string; action: string; client_id: string | null; reason: string | null; detail: string | null }

async function metrics(ts: TestServer): Promise<Sample[]> {
  return parsePrometheus(await (await fetch(`${ts.url}/metrics`)).text()).samples;
}
const refusalsTotal = (samples: Sample[]) => samples.filter((s) => s.name === 'agent_sts_refusals_total').reduce((n, s) => n + s.value, 0);

/** Refusal events after `after`, oldest first. */
async function refusalsSince(ts: TestServer, after: number): Promise<Event[]> {
  const res = await ts.admin('GET', '/admin/events?decision=refused&limit=1000');
  return (res.body.events as Event[]).filter((e) => e.id > after).reverse();
}
const lastEventId = async (ts: TestServer) => ((await ts.admin('GET', '/admin/events?limit=1')).body.events[0]?.id as number | undefined) ?? 0;
/** How many refusals an event stands for: a counted event says so in its detail, any other stands for one. */
const standsFor = (e: Event) => Number(/^count=(\d+) /.exec(e.detail ?? '')?.[1] ?? 1);

describe('refusals of unauthenticated requests', () => {
  describe('recorded one by one up to a share per source and interval, then counted', () => {
    let ts: TestServer;
    beforeAll(async () => {
      ts = await startTestServer({ ANONYMOUS_REFUSALS_RECORDED: '3', ANONYMOUS_REFUSAL_INTERVAL: '3', ANONYMOUS_REFUSAL_BURST: '0' });
    });
    afterAll(async () => {
      await ts?.close();
    });

    it('a stream of junk at every unauthenticated entry writes a few rows, and the counts account for every refusal', async () => {
      const before = await lastEventId(ts);
      const refusedBefore = refusalsTotal(await metrics(ts));
      const key = await newAgentKey();
      const started = Date.now();
      const sent: Record<string, number> = {};
      const expectStatus = async (action: string, status: number, res: Promise<{ status: number }>) => {
        expect((await res).status, action).toBe(status);
        sent[action] = (sent[action] ?? 0) + 1;
      };
      for (let i = 0; i < 25; i++) {
        await expectStatus('token:client_credentials', 401, postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(`junk-${i}`, 'nope') }));
      }
      for (let i = 0; i < 10; i++) {
        await expectStatus('client_auth:/token', 401, postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { 'workload-identity-token': `junk.${i}.x`, 'workload-proof-token': 'junk' }));
        await expectStatus('ssf', 401, fetch(`${ts.url}/ssf/streams`));
        await expectStatus('wit', 400, postJson(`${ts.url}/wit`, { agent_id: agentId(`nobody-${i}`), jwk: key.jwk, attestation: { type: 'join_token', token: 'x' } }));
        await expectStatus('backchannel_authentication', 400, postForm(`${ts.url}/backchannel`, { scope: 'openid', login_hint: 'x' }));
        await expectStatus('introspection', 401, postForm(`${ts.url}/token/introspection`, { token: 'x' }, { authorization: basic(`junk-${i}`, 'nope') }));
      }
      const total = Object.values(sent).reduce((a, b) => a + b, 0);
      const intervals = Math.ceil((Date.now() - started) / 3000) + 1;
      // Metrics hear of every refusal at once.
      expect(refusalsTotal(await metrics(ts)) - refusedBefore).toBe(total);

      // Once the interval's counts are written, every refusal is accounted for, by action.
      let events: Event[] = [];
      await eventually(async () => {
        events = await refusalsSince(ts, before);
        expect(events.reduce((n, e) => n + standsFor(e), 0)).toBe(total);
      }, 8000);
      const byAction: Record<string, number> = {};
      for (const e of events) byAction[e.action] = (byAction[e.action] ?? 0) + standsFor(e);
      expect(byAction).toEqual(sent);
      // Far fewer rows than refusals: in each interval the sending spanned, three one by one, then one per action and reason.
      const actionsAndReasons = new Set(events.map((e) => `${e.action} ${e.reason}`)).size;
      expect(actionsAndReasons).toBe(6);
      expect(events.length).toBeLessThanOrEqual(intervals * (3 + actionsAndReasons));
      expect(events.length).toBeLessThan(total);
      const counted = events.filter((e) => /^count=/.test(e.detail ?? ''));
      expect(counted.length).toBeGreaterThan(0);
      for (const c of counted) {
        expect(c.client_id).toBeNull();
        expect(c.detail).toMatch(/^count=\d+ source=127\.0\.0\.1 from=\d{4}-\d\d-\d\dT[\d:.]+Z to=\d{4}-\d\d-\d\dT[\d:.]+Z; first: client_id=/);
      }
      // The counted rows are in the audit export too.
      const audit = await fetch(`${ts.url}/admin/audit?kind=decision`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      expect(audit.status).toBe(200);
      const lines = (await audit.text()).trim().split('\n').map((l) => JSON.parse(l) as { detail?: string; decision: string });
      expect(lines.some((l) => l.decision === 'refused' && /^count=\d+ source=127\.0\.0\.1 /.test(l.detail ?? ''))).toBe(true);
    });

    it('grant types the server does not offer are counted together, named in the first one\'s detail', async () => {
      const before = await lastEventId(ts);
      const started = Date.now();
      const N = 40;
      for (let i = 0; i < N; i++) {
        expect((await postForm(`${ts.url}/token`, { grant_type: `urn:y:${i}` }, { authorization: basic(`junk-${i}`, 'nope') })).status).toBe(401);
      }
      const intervals = Math.ceil((Date.now() - started) / 3000) + 1;
      let events: Event[] = [];
      await eventually(async () => {
        events = await refusalsSince(ts, before);
        expect(events.reduce((n, e) => n + standsFor(e), 0)).toBe(N);
      }, 8000);
      // Three one by one per interval, then one counter: not one per grant type.
      expect(events.length).toBeLessThanOrEqual(intervals * 4);
      const counted = events.filter((e) => /^count=/.test(e.detail ?? ''));
      expect(counted.length).toBeGreaterThan(0);
      for (const c of counted) {
        expect(c).toMatchObject({ action: 'token:other', reason: 'invalid_client', client_id: null });
        expect(c.detail).toMatch(/; first: client_id=\S+ action=token:urn:y:\d+ /);
      }
    });

    it('expired approver page sessions are deleted as new ones start', async () => {
      const alice = await registerApprover(ts, 'alice@example.com');
      const signIn = () => fetch(`${ts.url}/approve/login`, {
        method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: ts.url }, body: new URLSearchParams({ credential: alice.credential }).toString(),
      });
      expect((await signIn()).status).toBe(303);
      const sessions = async () => Number((await ts.server.db.knex('approver_sessions').count({ n: '*' }).first())!.n);
      expect(await sessions()).toBe(1);
      ts.clock.advance(3601);
      expect((await signIn()).status).toBe(303);
      expect(await sessions()).toBe(1);
    });
  });

  describe('throttled per source', () => {
    let ts: TestServer;
    let agent: SecretAgent;
    beforeAll(async () => {
      ts = await startTestServer({ ANONYMOUS_REFUSAL_BURST: '5', ANONYMOUS_REFUSAL_RATE: '12', ANONYMOUS_REFUSAL_INTERVAL: '1' });
      agent = await registerSecretAgent(ts, { id: agentId('throttled'), scopes: ['read'], audiences: [API] });
    });
    afterAll(async () => {
      await ts?.close();
    });

    it('successful requests never count; refused unauthenticated ones do, and past the burst the source gets 429 before any slow hash', async () => {
      for (let i = 0; i < 30; i++) expect((await agent.token({ grant_type: 'client_credentials' })).status).toBe(200);
      const wrong = { authorization: basic(agent.id, 'wrong-secret') };
      let refused = 0;
      let throttled: Awaited<ReturnType<typeof postForm>> | undefined;
      for (let i = 0; i < 10 && !throttled; i++) {
        const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, wrong);
        if (res.status === 429) throttled = res;
        else {
          expect(res.status).toBe(401);
          refused++;
        }
      }
      expect(refused).toBeGreaterThanOrEqual(5);
      expect(throttled, 'a 429 after the burst').toBeDefined();
      expect(throttled!.body).toEqual({ error: 'temporarily_unavailable', error_description: expect.stringMatching(/too many refused requests/) });
      const retryAfter = Number(throttled!.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(5);
      expect(throttled!.headers.get('cache-control')).toBe('no-store');

      // Throttled: no slow hash for further wrong secrets; every authenticating endpoint answers 429.
      const hashes = sampleValue(await metrics(ts), 'agent_sts_client_secret_hashes_total');
      expect((await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, wrong)).status).toBe(429);
      expect(sampleValue(await metrics(ts), 'agent_sts_client_secret_hashes_total')).toBe(hashes);
      expect((await agent.token({ grant_type: 'client_credentials' })).status).toBe(429);
      expect((await postForm(`${ts.url}/token/introspection`, { token: 'x' }, agent.auth)).status).toBe(429);
      expect((await postForm(`${ts.url}/backchannel`, { scope: 'openid' }, agent.auth)).status).toBe(429);
      expect((await fetch(`${ts.url}/ssf/streams`)).status).toBe(429);
      expect((await postJson(`${ts.url}/wit`, {})).status).toBe(429);
      expect((await fetch(`${ts.url}/approvals`)).status).toBe(429);
      // Without TRUST_PROXY, X-Forwarded-For does not change the source.
      expect((await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { ...agent.auth, 'x-forwarded-for': '203.0.113.50' })).status).toBe(429);
      // Public reads and the admin API are never throttled.
      for (const path of ['/healthz', '/jwks', '/.well-known/oauth-authorization-server', '/metrics']) expect((await fetch(`${ts.url}${path}`)).status, path).toBe(200);
      expect((await ts.admin('GET', '/admin/agents')).status).toBe(200);

      // After Retry-After, the source is answered again.
      await new Promise((r) => setTimeout(r, retryAfter * 1000 + 100));
      expect((await agent.token({ grant_type: 'client_credentials' })).status).toBe(200);

      // The throttled requests are counted in the audit.
      await eventually(async () => {
        const events = await refusalsSince(ts, 0);
        const limited = events.filter((e) => e.action === 'rate_limit');
        expect(limited.length).toBeGreaterThan(0);
        expect(limited.every((e) => e.reason === 'rate_limited' && /^count=\d+ source=127\.0\.0\.1 /.test(e.detail ?? ''))).toBe(true);
      }, 5000);
    });
  });

  describe('sent at once', () => {
    let ts: TestServer;
    const BURST = 5;
    const N = 150;
    beforeAll(async () => {
      ts = await startTestServer({ ANONYMOUS_REFUSAL_BURST: String(BURST), ANONYMOUS_REFUSAL_RATE: '1', ANONYMOUS_REFUSALS_RECORDED: '1', ANONYMOUS_REFUSAL_INTERVAL: '2' });
      await registerSecretAgent(ts, { id: agentId('at-once'), scopes: ['read'], audiences: [API] });
    });
    afterAll(async () => {
      await ts?.close();
    });

    it('requests sent at once get no more than the burst past the guard, and a grant type of their own each writes no row of its own', async () => {
      const before = await lastEventId(ts);
      const hashes = sampleValue(await metrics(ts), 'agent_sts_client_secret_hashes_total') ?? 0;
      // A wrong secret each (no hash shared) and a grant type each (a counter each, were it kept).
      const results = await Promise.all(Array.from({ length: N }, (_, i) =>
        postForm(`${ts.url}/token`, { grant_type: `urn:x:${i}` }, { authorization: basic(agentId('at-once'), `wrong-${i}`) })));
      const byStatus: Record<number, number> = {};
      for (const r of results) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
      expect(N - (byStatus[429] ?? 0), JSON.stringify(byStatus)).toBeLessThanOrEqual(BURST);
      expect(Object.keys(byStatus).every((s) => ['400', '401', '429'].includes(s)), JSON.stringify(byStatus)).toBe(true);
      expect((sampleValue(await metrics(ts), 'agent_sts_client_secret_hashes_total') ?? 0) - hashes).toBeLessThanOrEqual(BURST);

      // Every request accounted for, in a handful of rows: counters are kept for the grant types the server offers only.
      let events: Event[] = [];
      await eventually(async () => {
        events = await refusalsSince(ts, before);
        expect(events.reduce((n, e) => n + standsFor(e), 0)).toBe(N);
      }, 8000);
      expect(events.length).toBeLessThanOrEqual(8);
      const counted = events.filter((e) => /^count=/.test(e.detail ?? '') && e.action !== 'rate_limit');
      for (const c of counted) {
        expect(c.action).toBe('token:other');
        expect(c.detail).toMatch(/; first: client_id=\S+ action=token:urn:x:\d+ /);
      }
    });
  });

  describe('with a token the caller has not proven to hold', () => {
    let ts: TestServer;
    const N = 30;
    beforeAll(async () => {
      ts = await startTestServer({ TRUST_PROXY: 'true', ANONYMOUS_REFUSAL_BURST: '5', ANONYMOUS_REFUSAL_RATE: '1', ANONYMOUS_REFUSALS_RECORDED: '1' });
    });
    afterAll(async () => {
      await ts?.close();
    });

    const send = async (token: string, source: string) => {
      const before = await lastEventId(ts);
      const statuses: Record<number, number> = {};
      for (let i = 0; i < N; i++) {
        const res = await fetch(`${ts.url}/ssf/streams`, { headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': source } });
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      }
      return { statuses, rows: await refusalsSince(ts, before) };
    };

    it('a leaked WIT-bound access token at the SSF API is throttled and counted like a bad one', async () => {
      const id = agentId('victim-bound');
      expect((await ts.admin('POST', '/admin/agents', { id, token_endpoint_auth_method: 'wit', audiences: [API], attestors: [{ type: 'join_token' }] })).status).toBe(201);
      const key = await newAgentKey();
      const tok = await tokenWithWit(ts, id, await witByJoinToken(ts, id, key), key, { resource: API });
      expect(tok.status, JSON.stringify(tok.body)).toBe(200);
      const leaked = tok.body.access_token as string;
      expect(decodeJwt(leaked).cnf).toBeDefined();

      const { statuses, rows } = await send(leaked, '203.0.113.21');
      expect(statuses[401]).toBe(5);
      expect(statuses[429]).toBe(N - 5);
      // One row as it happened; the rest wait to be counted at the interval's end.
      expect(rows.length).toBe(1);
      expect(rows[0]).toMatchObject({ action: 'ssf', client_id: id, reason: 'invalid_token' });
    });

    it('a bearer access token for another audience at the SSF API is throttled and counted like a bad one', async () => {
      const agent = await registerSecretAgent(ts, { id: agentId('victim-aud'), scopes: ['read'], audiences: [API] });
      const tok = await agent.token({ grant_type: 'client_credentials', resource: API });
      expect(tok.status, JSON.stringify(tok.body)).toBe(200);

      const { statuses, rows } = await send(tok.body.access_token as string, '203.0.113.22');
      expect(statuses[401]).toBe(5);
      expect(statuses[429]).toBe(N - 5);
      expect(rows.length).toBe(1);
      // The owner's own requests from its own address are not throttled.
      expect((await agent.token({ grant_type: 'client_credentials', resource: API })).status).toBe(200);
    });
  });

  describe('behind a trusted proxy', () => {
    let ts: TestServer;
    beforeAll(async () => {
      ts = await startTestServer({ TRUST_PROXY: 'true', ANONYMOUS_REFUSAL_BURST: '2', ANONYMOUS_REFUSAL_RATE: '1' });
    });
    afterAll(async () => {
      await ts?.close();
    });

    it('the source is the last X-Forwarded-For entry, the address the proxy saw', async () => {
      const junk = (xff: string) => postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic('junk', 'nope'), 'x-forwarded-for': xff });
      expect((await junk('198.51.100.7, 203.0.113.9')).status).toBe(401);
      expect((await junk('198.51.100.8, 203.0.113.9')).status).toBe(401);
      // A different first entry (the client's own claim) does not make another source.
      expect((await junk('192.0.2.1, 203.0.113.9')).status).toBe(429);
      expect((await junk('203.0.113.9')).status).toBe(429);
      // Another address the proxy saw is another source.
      expect((await junk('203.0.113.10')).status).toBe(401);
    });
  });

  it('an IPv6 source is its /64; an IPv4-mapped address is the IPv4 address', () => {
    expect(sourceAddress('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(sourceAddress('2001:db8:1:2::9')).toBe('2001:db8:1:2::/64');
    expect(sourceAddress('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(sourceAddress('2001:0db8:0001:0002:ffff::1%eth0')).toBe('2001:db8:1:2::/64');
    expect(sourceAddress('::1')).toBe('0:0:0:0::/64');
    expect(sourceAddress('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(sourceAddress('192.0.2.7')).toBe('192.0.2.7');
    expect(sourceAddress(undefined)).toBe('unknown');
  });
});

describe('the anonymous-refusal guard and the spelling of a path', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer({ ANONYMOUS_REFUSAL_BURST: '3', ANONYMOUS_REFUSAL_RATE: '1', ANONYMOUS_REFUSAL_INTERVAL: '60' });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('throttles a path however it is spelled, as the routers match it (case, trailing slash)', async () => {
    const key = await newAgentKey();
    const wit = (path: string, i: number) => postJson(`${ts.url}${path}`, { agent_id: agentId(`nobody-${i}`), jwk: key.jwk, attestation: { type: 'join_token', token: `x${i}` } });
    const junk = (path: string) => fetch(`${ts.url}${path}`, { headers: { authorization: 'Bearer junk' } });
    const first: number[] = [];
    for (let i = 0; i < 6; i++) first.push((await wit('/wit', i)).status);
    expect(first).toContain(429);
    const statuses: Record<string, number[]> = {};
    for (let i = 0; i < 5; i++) {
      for (const [name, res] of [
        ['POST /WIT', wit('/WIT', 200 + i)],
        ['POST /wit/', wit('/wit/', 300 + i)],
        ['GET /SSF/streams', junk('/SSF/streams')],
        ['GET /ssf/streams/', junk('/ssf/streams/')],
        ['GET /approvals/', junk('/approvals/')],
        ['GET /Approvals', junk('/Approvals')],
      ] as const) (statuses[name] ??= []).push((await res).status);
    }
    for (const [name, v] of Object.entries(statuses)) expect(v.every((s) => s === 429), `${name}: ${JSON.stringify(v)}`).toBe(true);
  });
});
