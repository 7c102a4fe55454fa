import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { agentId, enc, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { agentKeyPair } from '../support/oauth-client.js';
import { newAgentKey, tokenWithWit, witByJoinToken } from '../support/workload.js';
import { privateJwk, publicOf } from '../support/biscuit.js';
import {
  call, CREDENTIAL_CHANGE, parseSet, poll, POLL, PUSH, PushReceiver, SESSION_REVOKED, ssfClient, STREAM_UPDATED, TOKEN_CLAIMS_CHANGE, until,
  VERIFICATION, verifySet, type SsfClient,
} from './support.js';

const API = 'https://api.example/orders';

describe('Shared Signals transmitter', () => {
  let ts: TestServer;
  let pusher: SsfClient;
  let poller: SsfClient;
  let receiver: PushReceiver;
  let pushStream: Record<string, any>;
  let pollStream: Record<string, any>;
  let app: SecretAgent;
  let orchestrator: SecretAgent;

  beforeAll(async () => {
    // Push authorization headers are encrypted at rest with the key encryption key.
    // The push receiver listens on loopback, refused unless allowed.
    ts = await startTestServer({ AGENT_STS_KEY_ENCRYPTION_KEY: '11'.repeat(32), SSF_PUSH_ALLOW_ADDRESSES: '127.0.0.1' });
    receiver = await new PushReceiver().start();
    pusher = await ssfClient(ts, 'push-receiver');
    poller = await ssfClient(ts, 'poll-receiver');
    app = await registerSecretAgent(ts, { id: agentId('app'), scopes: ['orders:read', 'orders:write'], audiences: [API] });
    orchestrator = await registerSecretAgent(ts, {
      id: agentId('orchestrator'), grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['orders:read'], audiences: [API], token_exchange: { may_act_for_others: true },
    });
    const created = await pusher.call('POST', '/ssf/streams', {
      delivery: { method: PUSH, endpoint_url: receiver.url, authorization_header: 'Bearer receiver-secret-0123456789' },
      description: 'push receiver',
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    pushStream = created.body;
    const polled = await poller.call('POST', '/ssf/streams', { delivery: { method: POLL } });
    expect(polled.status, JSON.stringify(polled.body)).toBe(201);
    pollStream = polled.body;
  });
  afterAll(async () => {
    await ts?.close();
    await receiver?.stop();
  });

  /** Polls until every jti asked for arrived (acknowledging everything seen), returning the SETs by jti. */
  async function pollAll(want: (sets: ReturnType<typeof parseSet>[]) => boolean, ms = 1000) {
    const seen: ReturnType<typeof parseSet>[] = [];
    await until(async () => {
      const r = await poll(ts, poller, pollStream.delivery.endpoint_url, { maxEvents: 50, returnImmediately: false, ack: seen.filter((s) => !s.acked).map((s) => s.claims.jti!) });
      for (const s of seen) s.acked = true;
      for (const set of Object.values(r.sets)) seen.push(parseSet(set));
      return want(seen);
    }, ms, 'polled events');
    // Acknowledge the last batch.
    await poll(ts, poller, pollStream.delivery.endpoint_url, { maxEvents: 0, ack: seen.filter((s) => !s.acked).map((s) => s.claims.jti!) });
    return seen;
  }

  it('publishes its configuration', async () => {
    const res = await fetch(`${ts.url}/.well-known/ssf-configuration`);
    expect(res.status).toBe(200);
    const meta = await res.json();
    expect(meta).toMatchObject({
      issuer: ts.issuer, jwks_uri: `${ts.issuer}/jwks`, delivery_methods_supported: [PUSH, POLL],
      configuration_endpoint: `${ts.issuer}/ssf/streams`, status_endpoint: `${ts.issuer}/ssf/status`,
      add_subject_endpoint: `${ts.issuer}/ssf/subjects/add`, remove_subject_endpoint: `${ts.issuer}/ssf/subjects/remove`,
      verification_endpoint: `${ts.issuer}/ssf/verify`, authorization_schemes: [{ spec_urn: 'urn:ietf:rfc:6749' }], default_subjects: 'ALL',
    });
  });

  it('creates streams owned by their client, never showing the authorization header', async () => {
    expect(pushStream).toMatchObject({ iss: ts.issuer, aud: pusher.agent.id, delivery: { method: PUSH, endpoint_url: receiver.url, authorization_header: 'Bearer ****' } });
    expect(pushStream.events_delivered).toEqual([SESSION_REVOKED, CREDENTIAL_CHANGE, TOKEN_CLAIMS_CHANGE]);
    expect(pollStream.delivery).toEqual({ method: POLL, endpoint_url: `${ts.issuer}/ssf/poll/${pollStream.stream_id}` });
    const read = await pusher.call('GET', `/ssf/streams?stream_id=${pushStream.stream_id}`);
    expect(read.status).toBe(200);
    expect(read.body).toEqual(pushStream);
    const all = await pusher.call('GET', '/ssf/streams');
    expect(all.body).toEqual([pushStream]);
    expect(JSON.stringify(ts.logs)).not.toContain('receiver-secret');
    const stored = await ts.server.db.knex('ssf_streams').where({ stream_id: pushStream.stream_id }).first('authorization_header');
    expect(stored.authorization_header).toMatch(/^aes256gcm-v1\./);
    expect(stored.authorization_header).not.toContain('receiver-secret');
    // Another client's stream does not exist for this one.
    for (const [method, path, body] of [
      ['GET', `/ssf/streams?stream_id=${pushStream.stream_id}`], ['PATCH', '/ssf/streams', { stream_id: pushStream.stream_id, description: 'x' }],
      ['DELETE', `/ssf/streams?stream_id=${pushStream.stream_id}`], ['GET', `/ssf/status?stream_id=${pushStream.stream_id}`],
      ['POST', '/ssf/status', { stream_id: pushStream.stream_id, status: 'disabled' }], ['POST', '/ssf/verify', { stream_id: pushStream.stream_id }],
      ['POST', '/ssf/subjects/remove', { stream_id: pushStream.stream_id, subject: { format: 'uri', uri: app.id } }],
    ] as const) {
      const res = await poller.call(method, path, body);
      expect(res.status, `${method} ${path}`).toBe(404);
    }
    const stolen = await call(ts, 'POST', `/ssf/poll/${pollStream.stream_id}`, pusher.token, { returnImmediately: true });
    expect(stolen.status).toBe(404);
    // Refusals are recorded with the client that made them.
    const refusals = (await ts.admin('GET', `/admin/events?decision=refused&client_id=${enc(poller.agent.id)}`)).body.events as { action: string; reason: string }[];
    expect(refusals.filter((e) => e.action === 'ssf' && e.reason === 'not_found').length).toBeGreaterThanOrEqual(7);
  });

  it('refuses stream management without the right token', async () => {
    const none = await call(ts, 'GET', '/ssf/streams', undefined);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer realm=/);
    const garbage = await call(ts, 'GET', '/ssf/streams', 'not-a-token');
    expect(garbage.status).toBe(401);
    expect(garbage.headers.get('www-authenticate')).toContain('error="invalid_token"');

    // Our token for another audience.
    const other = await pusher.agent.token({ grant_type: 'client_credentials', resource: 'https://elsewhere.example', scope: 'ssf.manage' });
    const wrongAud = await call(ts, 'GET', '/ssf/streams', other.body.access_token);
    expect(wrongAud.status).toBe(401);
    expect(wrongAud.headers.get('www-authenticate')).toContain('error="invalid_token"');

    // Right audience, no ssf.manage scope.
    const noScope = await pusher.agent.token({ grant_type: 'client_credentials', resource: ts.issuer, scope: 'other' });
    const forbidden = await call(ts, 'POST', '/ssf/streams', noScope.body.access_token, { delivery: { method: POLL } });
    expect(forbidden.status).toBe(403);
    expect(forbidden.headers.get('www-authenticate')).toContain('error="insufficient_scope"');

    // A revoked token.
    const revokedTok = (await pusher.agent.token({ grant_type: 'client_credentials', resource: ts.issuer, scope: 'ssf.manage' })).body.access_token;
    await fetch(`${ts.url}/token/revocation`, { method: 'POST', headers: { ...pusher.agent.auth, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${revokedTok}` });
    const revoked = await call(ts, 'GET', '/ssf/streams', revokedTok);
    expect(revoked.status).toBe(401);
    expect(revoked.body.error_description).toMatch(/revoked/);

    // An expired token (the server's clock moves past its exp).
    const expiring = (await pusher.agent.token({ grant_type: 'client_credentials', resource: ts.issuer, scope: 'ssf.manage' })).body.access_token;
    ts.clock.advance(3600);
    try {
      const expired = await call(ts, 'GET', '/ssf/streams', expiring);
      expect(expired.status).toBe(401);
      expect(expired.headers.get('www-authenticate')).toContain('error="invalid_token"');
    } finally {
      ts.clock.advance(-3600);
    }
  });

  it('refuses bad stream requests with 400, never a partial write', async () => {
    for (const body of [
      { delivery: { method: 'urn:example:carrier-pigeon' } },
      { delivery: { method: PUSH } },
      { delivery: { method: PUSH, endpoint_url: 'ftp://example.com/x' } },
      { delivery: { method: PUSH, endpoint_url: 'http://receiver.example/events' } },
      { delivery: { method: PUSH, endpoint_url: 'http://127.attacker.example/events' } },
      { delivery: { method: PUSH, endpoint_url: 'https://user:pass@receiver.example/events' } },
      { delivery: { method: PUSH, endpoint_url: 'https://receiver.example/events', authorization_header: 'Bearer a\r\nX-Injected: 1' } },
      { delivery: { method: POLL, endpoint_url: 'https://receiver.example/poll' } },
      { delivery: { method: POLL }, surprise: true },
      { events_requested: 'all' },
    ]) {
      const res = await poller.call('POST', '/ssf/streams', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.error).toBe('invalid_request');
    }
    expect((await poller.call('GET', '/ssf/streams')).body).toHaveLength(1);
    expect((await poller.call('GET', '/ssf/streams?stream_id=nope')).status).toBe(404);
    expect((await poller.call('POST', '/ssf/subjects/remove', { stream_id: pollStream.stream_id, subject: { format: 'email', email: 'a@b' } })).status).toBe(400);
  });

  it('delivers session-revoked for an admin revocation to push and poll receivers within a second', async () => {
    const token = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const jti = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti as string;
    const start = Date.now();
    const res = await ts.admin('POST', `/admin/tokens/${jti}/revoke`);
    expect(res.status).toBe(200);
    const pushed = await until(() => receiver.of(SESSION_REVOKED).find((r) => r.claims.sub_id.jti === jti), 1000, 'pushed event');
    expect(pushed.at - start).toBeLessThan(1000);
    const polled = await pollAll((seen) => seen.some((s) => s.claims.sub_id.jti === jti));
    expect(Date.now() - start).toBeLessThan(2000);

    const { payload, protectedHeader } = await verifySet(ts, pushed.set, pusher.agent.id);
    expect(protectedHeader.typ).toBe('secevent+jwt');
    const jwks = await (await fetch(`${ts.issuer}/jwks`)).json() as { keys: { kid: string }[] };
    expect(jwks.keys.map((k: { kid: string }) => k.kid)).toContain(protectedHeader.kid);
    expect(payload.sub_id).toEqual({ format: 'jwt_id', iss: ts.issuer, jti });
    expect(Object.keys(payload.sub_id)).toEqual(['format', 'iss', 'jti']);
    expect(payload.events[SESSION_REVOKED]).toMatchObject({ initiating_entity: 'admin', reason_admin: { en: 'revoked by admin' } });
    expect(Number.isInteger(payload.events[SESSION_REVOKED]!.event_timestamp)).toBe(true);
    expect(pushed.authorization).toBe('Bearer receiver-secret-0123456789');
    const p = polled.find((s) => s.claims.sub_id.jti === jti)!;
    await verifySet(ts, p.set, poller.agent.id);
  });

  it('delivers one session-revoked per token of a cascade', async () => {
    const t0 = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const t1 = (await exchange(orchestrator, { subject_token: t0, subject_token_type: AT, resource: API })).body.access_token as string;
    const jtiOf = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()).jti as string;
    const [j0, j1] = [jtiOf(t0), jtiOf(t1)];
    // Revoked by its holder at the RFC 7009 endpoint.
    const start = Date.now();
    const rev = await fetch(`${ts.url}/token/revocation`, { method: 'POST', headers: { ...app.auth, 'content-type': 'application/x-www-form-urlencoded' }, body: `token=${t0}` });
    expect(rev.status).toBe(200);
    const both = await until(() => {
      const got = receiver.of(SESSION_REVOKED).filter((r) => [j0, j1].includes(r.claims.sub_id.jti!));
      return got.length === 2 && got;
    }, 1000, 'cascade events');
    expect(Date.now() - start).toBeLessThan(1000);
    expect(both.map((r) => r.claims.sub_id.jti)).toEqual([j0, j1]);
    expect(both[0]!.claims.events[SESSION_REVOKED]).toMatchObject({ initiating_entity: 'user' });
    expect(both[1]!.claims.events[SESSION_REVOKED]).toMatchObject({ initiating_entity: 'policy' });
    const polled = await pollAll((seen) => [j0, j1].every((j) => seen.some((s) => s.claims.sub_id.jti === j)));
    expect(polled.filter((s) => [j0, j1].includes(s.claims.sub_id.jti!)).map((s) => s.claims.sub_id.jti)).toEqual([j0, j1]);
  });

  it('announces agent key changes, secret rotation, claim changes and signing-key rotation', async () => {
    const worker = await registerSecretAgent(ts, { id: agentId('worker'), scopes: ['a'], audiences: [API] });
    const before = receiver.received.length;
    const { jwk } = await agentKeyPair();
    expect((await ts.admin('PATCH', `/admin/agents/${enc(worker.id)}`, { scopes: ['a', 'b'], audiences: [API, 'https://two.example'] })).status).toBe(200);
    expect((await ts.admin('POST', `/admin/agents/${enc(worker.id)}/secret`)).status).toBe(200);
    expect((await ts.admin('POST', '/admin/keys/rotate')).status).toBe(200);
    const keyed = await ts.admin('POST', '/admin/agents', { id: agentId('keyed'), token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [jwk] }, scopes: ['a'], audiences: [API] });
    expect(keyed.status).toBe(201);
    const { jwk: jwk2 } = await agentKeyPair('ES256');
    expect((await ts.admin('PATCH', `/admin/agents/${enc(agentId('keyed'))}`, { jwks: { keys: [jwk2] } })).status).toBe(200);

    const got = await until(() => {
      const r = receiver.received.slice(before);
      return r.length >= 4 && r;
    }, 1000, 'change events');
    const claims = got.find((r) => r.type === TOKEN_CLAIMS_CHANGE)!;
    expect(claims.claims.sub_id).toEqual({ format: 'uri', uri: worker.id });
    expect(claims.claims.events[TOKEN_CLAIMS_CHANGE]).toMatchObject({ claims: { scope: 'a b', aud: [API, 'https://two.example'] } });
    const changes = got.filter((r) => r.type === CREDENTIAL_CHANGE);
    expect(changes.map((r) => r.claims.sub_id)).toEqual([
      { format: 'uri', uri: worker.id }, { format: 'uri', uri: ts.issuer }, { format: 'uri', uri: agentId('keyed') },
    ]);
    for (const c of changes) expect(c.claims.events[CREDENTIAL_CHANGE]).toMatchObject({ credential_type: 'app', change_type: 'update' });
    // The rotation's SET verifies with the JWKS as now published (signed with the active key).
    for (const r of got) await verifySet(ts, r.set, pusher.agent.id);
  });

  it('revokes every token of a disabled agent and says so about the agent', async () => {
    const victim = await registerSecretAgent(ts, { id: agentId('victim'), scopes: ['a'], audiences: [API] });
    const t = (await victim.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const jti = JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()).jti as string;
    const start = Date.now();
    expect((await ts.admin('DELETE', `/admin/agents/${enc(victim.id)}`)).status).toBe(200);
    const got = await until(() => {
      const r = receiver.received.filter((x) => x.claims.sub_id.jti === jti || x.claims.sub_id.uri === victim.id);
      return r.length === 3 && r;
    }, 1000, 'disable events');
    expect(Date.now() - start).toBeLessThan(1000);
    expect(got.map((r) => [r.type, r.claims.sub_id.format])).toEqual([[SESSION_REVOKED, 'jwt_id'], [SESSION_REVOKED, 'uri'], [CREDENTIAL_CHANGE, 'uri']]);
    expect(got[1]!.claims.events[SESSION_REVOKED]).toMatchObject({ initiating_entity: 'admin' });
    expect(got[2]!.claims.events[CREDENTIAL_CHANGE]).toMatchObject({ change_type: 'revoke', credential_type: 'app' });
  });

  it('verifies a stream and excludes removed subjects until added again', async () => {
    expect((await pusher.call('POST', '/ssf/verify', { stream_id: pushStream.stream_id, state: 'abc123' })).status).toBe(204);
    const v = await until(() => receiver.of(VERIFICATION).find((r) => r.claims.events[VERIFICATION]!.state === 'abc123'), 1000, 'verification');
    expect(v.claims.sub_id).toEqual({ format: 'opaque', id: pushStream.stream_id });
    await verifySet(ts, v.set, pusher.agent.id);

    const subject = { format: 'uri', uri: app.id };
    expect((await pusher.call('POST', '/ssf/subjects/remove', { stream_id: pushStream.stream_id, subject })).status).toBe(204);
    const hidden = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const hiddenJti = JSON.parse(Buffer.from(hidden.split('.')[1]!, 'base64url').toString()).jti as string;
    await ts.admin('POST', `/admin/tokens/${hiddenJti}/revoke`);
    // The poll stream still gets it; the push stream does not.
    await pollAll((seen) => seen.some((s) => s.claims.sub_id.jti === hiddenJti));
    expect((await pusher.call('POST', '/ssf/verify', { stream_id: pushStream.stream_id, state: 'after-remove' })).status).toBe(204);
    await until(() => receiver.of(VERIFICATION).find((r) => r.claims.events[VERIFICATION]!.state === 'after-remove'), 1000, 'verification');
    expect(receiver.received.some((r) => r.claims.sub_id.jti === hiddenJti)).toBe(false);

    expect((await pusher.call('POST', '/ssf/subjects/add', { stream_id: pushStream.stream_id, subject, verified: true })).status).toBe(200);
    const shown = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const shownJti = JSON.parse(Buffer.from(shown.split('.')[1]!, 'base64url').toString()).jti as string;
    await ts.admin('POST', `/admin/tokens/${shownJti}/revoke`);
    await until(() => receiver.received.some((r) => r.claims.sub_id.jti === shownJti), 1000, 'event after add');
  });

  it('announces a revoked WIT as a revoked credential, with the tokens obtained with it', async () => {
    const id = agentId('wit-agent');
    expect((await ts.admin('POST', '/admin/agents', {
      id, token_endpoint_auth_method: 'wit', scopes: ['a'], audiences: [API], attestors: [{ type: 'join_token' }],
    })).status).toBe(201);
    const key = await newAgentKey();
    const wit = await witByJoinToken(ts, id, key);
    const witJti = JSON.parse(Buffer.from(wit.split('.')[1]!, 'base64url').toString()).jti as string;
    const at = (await tokenWithWit(ts, id, wit, key)).body.access_token as string;
    const atJti = JSON.parse(Buffer.from(at.split('.')[1]!, 'base64url').toString()).jti as string;
    expect((await ts.admin('POST', `/admin/tokens/${witJti}/revoke`)).status).toBe(200);
    const got = await until(() => {
      const r = receiver.received.filter((x) => [witJti, atJti].includes(x.claims.sub_id.jti!) || (x.type === CREDENTIAL_CHANGE && x.claims.sub_id.uri === id));
      return r.length === 3 && r;
    }, 1000, 'WIT revocation events');
    expect(got.map((r) => [r.type, r.claims.sub_id.jti ?? r.claims.sub_id.uri])).toEqual([
      [SESSION_REVOKED, witJti], [SESSION_REVOKED, atJti], [CREDENTIAL_CHANGE, id],
    ]);
    expect(got[2]!.claims.events[CREDENTIAL_CHANGE]).toMatchObject({ change_type: 'revoke', credential_type: 'app' });
  });

  it('announces a Biscuit revoked by its revocation id when its record is known', async () => {
    const key = await privateJwk();
    const minter = await registerSecretAgent(ts, {
      id: agentId('biscuit-minter'), grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['orders:read'], audiences: [API],
      jwks: { keys: [{ ...publicOf(key), alg: 'EdDSA' }] }, token_exchange: { may_act_for_others: true },
    });
    const subject = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const minted = await exchange(minter, { subject_token: subject, subject_token_type: AT, requested_token_type: 'urn:agent-sts:params:oauth:token-type:biscuit', scope: 'orders:read' });
    expect(minted.status, JSON.stringify(minted.body)).toBe(200);
    const records = (await ts.admin('GET', `/admin/tokens?type=biscuit&client_id=${enc(minter.id)}`)).body.tokens as { jti: string; revocation_id: string }[];
    expect(records).toHaveLength(1);
    expect((await ts.admin('POST', '/admin/biscuits/revocations', { revocation_id: records[0]!.revocation_id })).status).toBe(200);
    const got = await until(() => receiver.of(SESSION_REVOKED).find((r) => r.claims.sub_id.jti === records[0]!.jti), 1000, 'Biscuit revocation event');
    expect(got.claims.sub_id).toEqual({ format: 'jwt_id', iss: ts.issuer, jti: records[0]!.jti });
    expect(got.claims.events[SESSION_REVOKED]).toMatchObject({ initiating_entity: 'admin' });
  });

  it('writes no new events for the streams of a disabled receiver', async () => {
    const other = await new PushReceiver().start();
    try {
      const doomed = await ssfClient(ts, 'doomed-receiver');
      expect((await doomed.call('POST', '/ssf/streams', { delivery: { method: PUSH, endpoint_url: other.url } })).status).toBe(201);
      expect((await ts.admin('DELETE', `/admin/agents/${enc(doomed.agent.id)}`)).status).toBe(200);
      const t = (await app.token({ grant_type: 'client_credentials' })).body.access_token as string;
      const jti = JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()).jti as string;
      await ts.admin('POST', `/admin/tokens/${jti}/revoke`);
      await until(() => receiver.received.some((r) => r.claims.sub_id.jti === jti), 1000, 'the event at the live receiver');
      await new Promise((r) => setTimeout(r, 200));
      expect(other.received.some((r) => r.claims.sub_id.jti === jti)).toBe(false);
      // Its token no longer manages anything.
      expect((await doomed.call('GET', '/ssf/streams')).status).toBe(401);
    } finally {
      await other.stop();
    }
  });

  it('updates, replaces and deletes streams; status changes are announced', async () => {
    const patched = await pusher.call('PATCH', '/ssf/streams', { stream_id: pushStream.stream_id, description: 'renamed', delivery: pushStream.delivery });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body.description).toBe('renamed');
    // The masked header sent back keeps the stored secret.
    expect(patched.body.delivery.authorization_header).toBe('Bearer ****');

    const status = await pusher.call('GET', `/ssf/status?stream_id=${pushStream.stream_id}`);
    expect(status.body).toEqual({ stream_id: pushStream.stream_id, status: 'enabled' });
    const paused = await pusher.call('POST', '/ssf/status', { stream_id: pushStream.stream_id, status: 'paused', reason: 'maintenance' });
    expect(paused.body).toEqual({ stream_id: pushStream.stream_id, status: 'paused', reason: 'maintenance' });
    expect((await pusher.call('POST', '/ssf/status', { stream_id: pushStream.stream_id, status: 'enabled' })).status).toBe(200);
    const updates = await until(() => {
      const u = receiver.of(STREAM_UPDATED);
      return u.length >= 2 && u;
    }, 1000, 'stream-updated events');
    expect(updates.map((u) => u.claims.events[STREAM_UPDATED]!.status)).toEqual(['paused', 'enabled']);
    expect(updates[0]!.claims.sub_id).toEqual({ format: 'opaque', id: pushStream.stream_id });
    const last = receiver.received.at(-1)!;
    expect(last.authorization).toBe('Bearer receiver-secret-0123456789');

    const replaced = await poller.call('PUT', '/ssf/streams', { stream_id: pollStream.stream_id, delivery: { method: POLL }, events_requested: [SESSION_REVOKED] });
    expect(replaced.status).toBe(200);
    expect(replaced.body.events_delivered).toEqual([SESSION_REVOKED]);
    expect(replaced.body.description).toBeUndefined();

    const extra = await poller.call('POST', '/ssf/streams', { delivery: { method: POLL } });
    expect((await poller.call('DELETE', `/ssf/streams?stream_id=${extra.body.stream_id}`)).status).toBe(204);
    expect((await poller.call('GET', `/ssf/streams?stream_id=${extra.body.stream_id}`)).status).toBe(404);
  });

  it('answers any JSON body with a 2xx or a 4xx JSON error, never a 500', { timeout: 60_000 }, async () => {
    const paths = ['/ssf/streams', '/ssf/status', '/ssf/subjects/add', '/ssf/subjects/remove', '/ssf/verify', `/ssf/poll/${pollStream.stream_id}`];
    const member = fc.oneof(fc.constant(pollStream.stream_id as string), fc.string(), fc.constant(PUSH), fc.constant(POLL), fc.constant('http://127.0.0.1:1/x'));
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record({ stream_id: member, delivery: fc.record({ method: member, endpoint_url: member }, { requiredKeys: [] }), status: member, subject: fc.jsonValue(), maxEvents: fc.integer(), ack: fc.array(fc.string()), setErrs: fc.jsonValue() }, { requiredKeys: [] }),
    );
    const statuses = new Set<number>();
    await fc.assert(fc.asyncProperty(fc.constantFrom(...paths), fc.constantFrom('POST', 'PATCH', 'PUT'), body, async (path, method, b) => {
      const res = await poller.call(path === '/ssf/streams' ? method : 'POST', path, path.startsWith('/ssf/poll') && typeof b === 'object' && b !== null && !Array.isArray(b) ? { ...b, returnImmediately: true } : b);
      statuses.add(res.status);
      expect(res.status, JSON.stringify({ path, b, body: res.body })).toBeLessThan(500);
      if (res.status >= 400) expect(typeof res.body.error).toBe('string');
    }), { numRuns: 150, examples: [[`/ssf/poll/${pollStream.stream_id}`, 'POST', { maxEvents: 0 }], ['/ssf/status', 'POST', { stream_id: 'nope', status: 'enabled' }]] });
    expect([...statuses].sort()).toEqual(expect.arrayContaining([200, 400]));
    expect(statuses.has(401)).toBe(false);
  });
});

/** SSF 1.0 `min_verification_interval`: a stream asks for verification events at a bounded rate. */
describe('verification requests of a stream', () => {
  let ts: TestServer;

  beforeAll(async () => {
    ts = await startTestServer({ SSF_MIN_VERIFICATION_INTERVAL: '1' });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('advertises min_verification_interval and answers 429 with Retry-After to a stream asking more often, not to another', async () => {
    const client = await ssfClient(ts, 'verify-rate');
    const one = await client.call('POST', '/ssf/streams', { delivery: { method: POLL } });
    const two = await client.call('POST', '/ssf/streams', { delivery: { method: POLL } });
    expect(one.body.min_verification_interval).toBe(1);
    expect((await client.call('GET', `/ssf/streams?stream_id=${one.body.stream_id}`)).body.min_verification_interval).toBe(1);

    // A burst of 5 is accepted; the 6th within the interval is refused without queuing an event.
    for (let i = 0; i < 5; i++) expect((await client.call('POST', '/ssf/verify', { stream_id: one.body.stream_id, state: `s${i}` })).status).toBe(204);
    const refused = await client.call('POST', '/ssf/verify', { stream_id: one.body.stream_id, state: 'too-soon' });
    expect(refused.status).toBe(429);
    expect(refused.body.error).toBe('temporarily_unavailable');
    expect(refused.body.error_description).toMatch(/min_verification_interval/);
    expect(refused.headers.get('retry-after')).toBe('1');
    const got = await poll(ts, client, one.body.delivery.endpoint_url, { maxEvents: 50, returnImmediately: true });
    const states = Object.values(got.sets).map((set) => parseSet(set).claims.events[VERIFICATION]?.state).filter((s) => s !== undefined);
    expect(states).toEqual(['s0', 's1', 's2', 's3', 's4']);

    // Another stream has its own turns; after Retry-After the first stream may ask again.
    expect((await client.call('POST', '/ssf/verify', { stream_id: two.body.stream_id })).status).toBe(204);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await client.call('POST', '/ssf/verify', { stream_id: one.body.stream_id, state: 'later' })).status).toBe(204);
  });
});
