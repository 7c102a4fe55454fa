import { createServer, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import {
  CREDENTIAL_CHANGE, SecurityEventError, SESSION_REVOKED, SsfReceiver, ssfConfigurationUrl, TOKEN_CLAIMS_CHANGE, VerificationError, Verifier,
} from '../../src/verifier/index.js';
import { eventually } from '../support/eventually.js';

/**
 * The receiver side of Shared Signals against a small stand-in transmitter that signs its own events,
 * so every malformed or forged event can be produced. The server's transmitter is exercised end to end
 * in test/ssf.
 */
const API = 'https://api.example.com';
const AGENT = 'spiffe://agent-sts.test/agents/caller';
const OTHER = 'spiffe://agent-sts.test/agents/other';

async function listen(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

interface Stream {
  id: string;
  method: string;
  endpoint?: string;
  authorization?: string;
  queue: Map<string, string>;
  acked: string[];
  errs: Record<string, { err: string }>;
  waiter?: () => void;
}

class StandInTransmitter {
  url = '';
  server!: Server;
  key!: CryptoKey;
  jwk!: JWK;
  otherKey!: CryptoKey;
  readonly streams = new Map<string, Stream>();
  jwksFetches = 0;
  bearer = 'manage-token';

  async start(): Promise<void> {
    const pair = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    this.key = pair.privateKey;
    this.jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'EdDSA', use: 'sig' };
    this.otherKey = (await generateKeyPair('EdDSA', { crv: 'Ed25519' })).privateKey;
    ({ server: this.server, url: this.url } = await listen((req, res) => void this.handle(req, res)));
  }

  private async handle(req: IncomingMessage, res: import('node:http').ServerResponse): Promise<void> {
    const path = new URL(req.url!, this.url).pathname;
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (path === '/.well-known/oauth-authorization-server') return json(200, { issuer: this.url, jwks_uri: `${this.url}/jwks` });
    if (path === '/jwks') {
      this.jwksFetches++;
      return json(200, { keys: [this.jwk] });
    }
    if (path === '/.well-known/ssf-configuration') {
      return json(200, { issuer: this.url, jwks_uri: `${this.url}/jwks`, configuration_endpoint: `${this.url}/ssf/streams`, delivery_methods_supported: ['urn:ietf:rfc:8935', 'urn:ietf:rfc:8936'] });
    }
    if (req.headers.authorization !== `Bearer ${this.bearer}`) return json(401, { error: 'invalid_token' });
    if (path === '/ssf/streams' && req.method === 'POST') {
      const cfg = JSON.parse(await body(req)) as { delivery: { method: string; endpoint_url?: string; authorization_header?: string } };
      const id = randomUUID();
      const stream: Stream = { id, method: cfg.delivery.method, queue: new Map(), acked: [], errs: {} };
      if (cfg.delivery.method === 'urn:ietf:rfc:8935') {
        stream.endpoint = cfg.delivery.endpoint_url!;
        stream.authorization = cfg.delivery.authorization_header!;
      }
      this.streams.set(id, stream);
      const endpoint = cfg.delivery.method === 'urn:ietf:rfc:8936' ? `${this.url}/ssf/poll/${id}` : cfg.delivery.endpoint_url;
      return json(201, { stream_id: id, iss: this.url, aud: API, delivery: { method: cfg.delivery.method, endpoint_url: endpoint } });
    }
    if (path === '/ssf/streams' && req.method === 'DELETE') {
      this.streams.delete(new URL(req.url!, this.url).searchParams.get('stream_id')!);
      res.writeHead(204).end();
      return;
    }
    const poll = /^\/ssf\/poll\/(.+)$/.exec(path);
    const stream = poll ? this.streams.get(poll[1]!) : undefined;
    if (stream && req.method === 'POST') {
      const ask = JSON.parse(await body(req)) as { ack?: string[]; setErrs?: Record<string, { err: string }> };
      for (const jti of ask.ack ?? []) {
        stream.queue.delete(jti);
        stream.acked.push(jti);
      }
      for (const [jti, e] of Object.entries(ask.setErrs ?? {})) {
        stream.queue.delete(jti);
        stream.errs[jti] = e;
      }
      if (!stream.queue.size) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1000);
          stream.waiter = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      stream.waiter = undefined;
      return json(200, { sets: Object.fromEntries(stream.queue), moreAvailable: false });
    }
    json(404, { error: 'not_found' });
  }

  /** A SET as our transmitter signs it; `tamper` changes the header or claims first. */
  async set(type: string, subId: Record<string, unknown>, event: Record<string, unknown> = {}, tamper: { header?: Record<string, unknown>; claims?: Record<string, unknown>; key?: CryptoKey } = {}): Promise<string> {
    const claims = { iss: this.url, jti: randomUUID(), iat: Math.floor(Date.now() / 1000), aud: API, sub_id: subId, events: { [type]: { event_timestamp: Math.floor(Date.now() / 1000), ...event } }, ...tamper.claims };
    return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: 'k1', typ: 'secevent+jwt', ...tamper.header }).sign(tamper.key ?? this.key);
  }

  /** Queues (poll) or posts (push) an event to every stream. */
  async emit(set: string): Promise<number[]> {
    const statuses: number[] = [];
    for (const stream of this.streams.values()) {
      if (stream.method === 'urn:ietf:rfc:8936') {
        stream.queue.set(randomUUID(), set);
        stream.waiter?.();
      } else {
        const res = await fetch(stream.endpoint!, { method: 'POST', headers: { 'content-type': 'application/secevent+jwt', authorization: stream.authorization! }, body: set });
        statuses.push(res.status);
      }
    }
    return statuses;
  }

  async token(claims: Record<string, unknown> = {}, typ = 'at+jwt'): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: this.url, sub: AGENT, client_id: AGENT, aud: API, scope: 'tools:read tools:write', jti: randomUUID(), iat: now, exp: now + 600, ...claims })
      .setProtectedHeader({ alg: 'EdDSA', kid: 'k1', typ }).sign(this.key);
  }
}

const jwtId = (t: StandInTransmitter, token: string) => ({ format: 'jwt_id', iss: t.url, jti: JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti });

describe('security events at the verifier (Shared Signals receiver)', () => {
  const t = new StandInTransmitter();

  beforeAll(() => t.start());
  afterAll(() => new Promise<void>((r) => t.server.close(() => r())));

  const verifierFor = () => new Verifier({ issuer: t.url, audience: API });
  const verify = (v: Verifier, token: string) => v.verifyAccessToken({ authorization: `Bearer ${token}`, method: 'GET', url: `${API}/x` });
  const refused = async (v: Verifier, token: string, why: RegExp) => {
    const err = await verify(v, token).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerificationError);
    expect((err as VerificationError).code).toBe('invalid_token');
    expect((err as Error).message).toMatch(why);
  };

  it('finds the SSF configuration where SSF 1.0 puts it', () => {
    expect(ssfConfigurationUrl('https://sts.example')).toBe('https://sts.example/.well-known/ssf-configuration');
    expect(ssfConfigurationUrl('https://sts.example/tenant/a')).toBe('https://sts.example/.well-known/ssf-configuration/tenant/a');
  });

  it('a poll receiver refuses a revoked token within a second and acknowledges the event', async () => {
    const v = verifierFor();
    const received: string[] = [];
    const receiver = new SsfReceiver({ verifier: v, accessToken: async () => t.bearer, delivery: { method: 'poll' }, onEvent: (e) => received.push(e.type) });
    const stream = await receiver.start();
    try {
      const revoked = await t.token();
      const kept = await t.token();
      await verify(v, revoked);
      await t.emit(await t.set(SESSION_REVOKED, jwtId(t, revoked), { initiating_entity: 'admin' }));
      const took = await eventually(() => refused(v, revoked, /revoked/));
      expect(took).toBeLessThan(1000);
      expect((await verify(v, kept)).subject).toBe(AGENT);
      expect(received).toEqual([SESSION_REVOKED]);
      await eventually(async () => expect(t.streams.get(stream.stream_id)!.acked).toHaveLength(1));
    } finally {
      await receiver.stop();
    }
    expect(t.streams.has(stream.stream_id)).toBe(false);
  });

  it('a poll receiver reports a forged event instead of acting on it', async () => {
    const v = verifierFor();
    const receiver = new SsfReceiver({ verifier: v, accessToken: t.bearer, delivery: { method: 'poll' }, onError: () => {} });
    const stream = await receiver.start();
    try {
      const token = await t.token();
      await t.emit(await t.set(SESSION_REVOKED, jwtId(t, token), {}, { key: t.otherKey }));
      await eventually(async () => expect(Object.values(t.streams.get(stream.stream_id)!.errs)).toEqual([{ err: 'invalid_key', description: expect.any(String) }]));
      await verify(v, token);
    } finally {
      await receiver.stop();
    }
  });

  it('a push receiver checks the stream\'s Authorization value and content type, and acts on verified events', async () => {
    const v = verifierFor();
    let receiver!: SsfReceiver;
    const endpoint = await listen((req, res) => receiver.pushHandler()(req, res));
    receiver = new SsfReceiver({ verifier: v, accessToken: t.bearer, delivery: { method: 'push', endpointUrl: `${endpoint.url}/events` } });
    await receiver.start();
    try {
      const token = await t.token();
      const set = await t.set(SESSION_REVOKED, jwtId(t, token));
      const wrongAuth = await fetch(`${endpoint.url}/events`, { method: 'POST', headers: { 'content-type': 'application/secevent+jwt', authorization: 'Bearer guessed' }, body: set });
      expect(wrongAuth.status).toBe(401);
      expect(((await wrongAuth.json()) as { err: string }).err).toBe('authentication_failed');
      const stream = [...t.streams.values()].find((s) => s.method === 'urn:ietf:rfc:8935')!;
      const wrongType = await fetch(`${endpoint.url}/events`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: stream.authorization! }, body: set });
      expect(wrongType.status).toBe(400);
      await verify(v, token);
      const forged = await fetch(`${endpoint.url}/events`, { method: 'POST', headers: { 'content-type': 'application/secevent+jwt', authorization: stream.authorization! }, body: await t.set(SESSION_REVOKED, jwtId(t, token), {}, { claims: { iss: 'https://evil.example' } }) });
      expect(forged.status).toBe(400);
      expect(((await forged.json()) as { err: string }).err).toBe('invalid_issuer');
      await verify(v, token);
      expect(await t.emit(set)).toEqual([202]);
      await refused(v, token, /revoked/);
    } finally {
      await receiver.stop();
      await new Promise<void>((r) => endpoint.server.close(() => r()));
    }
  });

  describe('event verification refuses', () => {
    let v: Verifier;
    beforeAll(() => {
      v = verifierFor();
    });
    const sub = { format: 'uri', uri: AGENT };
    const cases: Array<[string, () => Promise<string>, string]> = [
      ['a signature by another key', () => t.set(SESSION_REVOKED, sub, {}, { key: t.otherKey }), 'invalid_key'],
      ['an unknown kid', () => t.set(SESSION_REVOKED, sub, {}, { header: { kid: 'nope' } }), 'invalid_key'],
      ['typ JWT', () => t.set(SESSION_REVOKED, sub, {}, { header: { typ: 'JWT' } }), 'invalid_request'],
      ['an access token presented as an event', () => t.token(), 'invalid_request'],
      ['another issuer', () => t.set(SESSION_REVOKED, sub, {}, { claims: { iss: 'https://evil.example' } }), 'invalid_issuer'],
      ['another audience', () => t.set(SESSION_REVOKED, sub, {}, { claims: { aud: 'https://elsewhere.example' } }), 'invalid_audience'],
      ['no sub_id', () => t.set(SESSION_REVOKED, sub, {}, { claims: { sub_id: undefined } }), 'invalid_request'],
      ['two events in one SET', () => t.set(SESSION_REVOKED, sub, {}, { claims: { events: { [SESSION_REVOKED]: {}, [CREDENTIAL_CHANGE]: {} } } }), 'invalid_request'],
      ['no jti', () => t.set(SESSION_REVOKED, sub, {}, { claims: { jti: undefined } }), 'invalid_request'],
      ['an iat in the future', () => t.set(SESSION_REVOKED, sub, {}, { claims: { iat: Math.floor(Date.now() / 1000) + 3600 } }), 'invalid_request'],
      ['alg none', async () => {
        const [, payload] = (await t.set(SESSION_REVOKED, sub)).split('.');
        return `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'secevent+jwt', kid: 'k1' })).toString('base64url')}.${payload}.`;
      }, 'invalid_request'],
    ];
    for (const [what, make, code] of cases) {
      it(what, async () => {
        const token = await t.token();
        const err = await v.acceptSecurityEvent(await make(), { audience: API }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(SecurityEventError);
        expect((err as SecurityEventError).code).toBe(code);
        await verify(v, token);
      });
    }
  });

  it('an agent\'s revoked session refuses its earlier tokens, where it is subject, client or actor, and not its later ones', async () => {
    const v = verifierFor();
    const past = Math.floor(Date.now() / 1000) - 10;
    const own = await t.token({ iat: past });
    const asActor = await t.token({ sub: 'user-1', client_id: OTHER, act: { sub: OTHER, act: { sub: AGENT } }, iat: past });
    const unrelated = await t.token({ sub: OTHER, client_id: OTHER, iat: past });
    await v.acceptSecurityEvent(await t.set(SESSION_REVOKED, { format: 'uri', uri: AGENT }, { event_timestamp: past + 5 }));
    await refused(v, own, /tokens of .* have been revoked/);
    await refused(v, asActor, /tokens of .* have been revoked/);
    await verify(v, unrelated);
    await verify(v, await t.token());
  });

  it('a token-claims change refuses earlier tokens granting more than the agent now has', async () => {
    const v = verifierFor();
    const past = Math.floor(Date.now() / 1000) - 10;
    const wide = await t.token({ iat: past });
    const narrow = await t.token({ iat: past, scope: 'tools:read' });
    await v.acceptSecurityEvent(await t.set(TOKEN_CLAIMS_CHANGE, { format: 'uri', uri: AGENT }, { event_timestamp: past + 5, claims: { scope: 'tools:read', aud: [API] } }));
    await refused(v, wide, /scopes its agent no longer has/);
    await verify(v, narrow);
    await verify(v, await t.token({ scope: 'tools:read tools:write' }));
  });

  it('an audience removed from the agent refuses its earlier tokens for that audience', async () => {
    const v = verifierFor();
    const past = Math.floor(Date.now() / 1000) - 10;
    const token = await t.token({ iat: past, aud: [API, 'https://gone.example'] });
    await verify(v, token);
    await v.acceptSecurityEvent(await t.set(TOKEN_CLAIMS_CHANGE, { format: 'uri', uri: AGENT }, { event_timestamp: past + 5, claims: { scope: 'tools:read tools:write', aud: [API] } }));
    await refused(v, token, /audience/);
  });

  it('a credential change naming the issuer makes the verifier refetch its keys', async () => {
    const v = verifierFor();
    await verify(v, await t.token());
    const before = t.jwksFetches;
    await v.acceptSecurityEvent(await t.set(CREDENTIAL_CHANGE, { format: 'uri', uri: t.url }, { credential_type: 'app', change_type: 'update' }));
    await verify(v, await t.token());
    expect(t.jwksFetches).toBe(before + 1);
  });

  it('a revoked token\'s cached introspection answer is dropped', async () => {
    let introspections = 0;
    const introspection = await listen((_req, res) => {
      introspections++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ active: true }));
    });
    const fetchThrough: typeof fetch = async (input, init) => {
      const url = String(input);
      if (url.endsWith('/.well-known/oauth-authorization-server')) {
        return new Response(JSON.stringify({ issuer: t.url, jwks_uri: `${t.url}/jwks`, introspection_endpoint: `${introspection.url}/introspect` }), { headers: { 'content-type': 'application/json' } });
      }
      return fetch(input, init);
    };
    try {
      const v = new Verifier({ issuer: t.url, audience: API, introspection: { clientId: 'rs', clientSecret: 's', cacheSeconds: 60 }, fetch: fetchThrough });
      const token = await t.token();
      await verify(v, token);
      await verify(v, token);
      expect(introspections).toBe(1);
      await v.acceptSecurityEvent(await t.set(SESSION_REVOKED, { format: 'uri', uri: OTHER }));
      await verify(v, token);
      expect(introspections).toBe(1);
      await v.acceptSecurityEvent(await t.set(TOKEN_CLAIMS_CHANGE, { format: 'uri', uri: AGENT }, { event_timestamp: Math.floor(Date.now() / 1000) - 60, claims: { scope: 'tools:read tools:write' } }));
      await verify(v, token);
      expect(introspections).toBe(2);
    } finally {
      await new Promise<void>((r) => introspection.server.close(() => r()));
    }
  });
});
