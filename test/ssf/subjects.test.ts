import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, enc, startTestServer, type TestServer } from '../support/test-server.js';
import { registerSecretAgent, type SecretAgent } from '../support/agents.js';
import { postForm } from '../support/oauth-client.js';
import { CREDENTIAL_CHANGE, parseSet, poll, POLL, SESSION_REVOKED, ssfClient, TOKEN_CLAIMS_CHANGE, type ReceivedSet, type SsfClient } from './support.js';

const API_A = 'https://a.example/api';
const API_B = 'https://b.example/api';

/**
 * A stream carries the events its receiver has a stake in: about itself and the tokens issued to or for it
 * or for its id, about the resources and agents an admin granted it, or every subject when an admin granted
 * that. An agent holding `ssf.manage` alone learns nothing about other agents.
 */
describe('Shared Signals streams carry only what their receiver has a stake in', () => {
  let ts: TestServer;
  let alice: SecretAgent;
  let bob: SecretAgent;
  const receivers: Record<'nosy' | 'serverA' | 'followerB' | 'operator', { client: SsfClient; stream: Record<string, any>; got: ReceivedSet[] }> = {} as never;

  const token = async (agent: SecretAgent, resource: string) => {
    const res = await agent.token({ grant_type: 'client_credentials', resource });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.access_token as string;
  };
  const jtiOf = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()).jti as string;
  /** Everything pending on each stream, acknowledged. */
  const drain = async () => {
    for (const r of Object.values(receivers)) {
      for (;;) {
        const got = await poll(ts, r.client, r.stream.delivery.endpoint_url, { maxEvents: 100, returnImmediately: true });
        const sets = Object.values(got.sets).map((s) => parseSet(s));
        r.got.push(...sets);
        await poll(ts, r.client, r.stream.delivery.endpoint_url, { maxEvents: 0, returnImmediately: true, ack: sets.map((s) => s.claims.jti!) });
        if (!got.moreAvailable) break;
      }
    }
  };
  const about = (r: keyof typeof receivers, type: string, subject: (s: ReceivedSet['claims']['sub_id']) => boolean) =>
    receivers[r].got.filter((s) => s.type === type && subject(s.claims.sub_id));
  const jwtId = (jti: string) => (s: Record<string, string>) => s.format === 'jwt_id' && s.jti === jti;
  const agentUri = (id: string) => (s: Record<string, string>) => s.format === 'uri' && s.uri === id;

  beforeAll(async () => {
    ts = await startTestServer();
    alice = await registerSecretAgent(ts, { id: agentId('alice'), scopes: ['read', 'write'], audiences: [API_A] });
    bob = await registerSecretAgent(ts, { id: agentId('bob'), scopes: ['read'], audiences: [API_B] });
    const grants = { nosy: {}, serverA: { resources: [API_A] }, followerB: { follows: [bob.id] }, operator: { all_subjects: true } };
    for (const [name, ssf] of Object.entries(grants) as [keyof typeof receivers, Record<string, unknown>][]) {
      const client = await ssfClient(ts, `receiver-${name}`, ssf);
      const created = await client.call('POST', '/ssf/streams', { delivery: { method: POLL } });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      receivers[name] = { client, stream: created.body, got: [] };
    }
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('an agent with ssf.manage alone gets no event about other agents or their tokens, even after adding them as subjects', async () => {
    const { nosy } = receivers;
    for (const subject of [{ format: 'uri', uri: alice.id }, { format: 'uri', uri: bob.id }]) {
      expect((await nosy.client.call('POST', '/ssf/subjects/add', { stream_id: nosy.stream.stream_id, subject })).status).toBe(200);
    }
    const a = await token(alice, API_A);
    const b = await token(bob, API_B);
    expect((await ts.admin('POST', `/admin/tokens/${enc(jtiOf(a))}/revoke`)).status).toBe(200);
    expect((await postForm(`${ts.url}/token/revocation`, { token: b }, bob.auth)).status).toBe(200);
    expect((await ts.admin('PATCH', `/admin/agents/${enc(alice.id)}`, { scopes: ['read'] })).status).toBe(200);
    expect((await ts.admin('POST', `/admin/agents/${enc(bob.id)}/secret`)).status).toBe(200);
    // Its own token revoked, and the issuer's keys rotated: those it has a stake in.
    const own = (await nosy.client.agent.token({ grant_type: 'client_credentials', resource: 'https://elsewhere.example', scope: 'other' })).body.access_token as string;
    expect((await postForm(`${ts.url}/token/revocation`, { token: own }, nosy.client.agent.auth)).status).toBe(200);
    expect((await ts.admin('POST', '/admin/keys/rotate')).status).toBe(200);
    await drain();

    expect(nosy.got.map((s) => s.claims.sub_id)).toEqual([{ format: 'jwt_id', iss: ts.issuer, jti: jtiOf(own) }, { format: 'uri', uri: ts.issuer }]);
    // The others got what they have a stake in, and only that.
    const { serverA, followerB, operator } = receivers;
    expect(about('serverA', SESSION_REVOKED, jwtId(jtiOf(a)))).toHaveLength(1);
    expect(about('serverA', TOKEN_CLAIMS_CHANGE, agentUri(alice.id))).toHaveLength(1);
    expect(serverA.got.filter((s) => JSON.stringify(s.claims.sub_id).includes(bob.id) || jwtId(jtiOf(b))(s.claims.sub_id))).toEqual([]);
    expect(about('followerB', SESSION_REVOKED, jwtId(jtiOf(b)))).toHaveLength(1);
    expect(about('followerB', CREDENTIAL_CHANGE, agentUri(bob.id))).toHaveLength(1);
    expect(followerB.got.filter((s) => JSON.stringify(s.claims.sub_id).includes(alice.id) || jwtId(jtiOf(a))(s.claims.sub_id))).toEqual([]);
    for (const r of [serverA, followerB]) expect(r.got.some((s) => jwtId(jtiOf(own))(s.claims.sub_id))).toBe(false);
    for (const r of [serverA, followerB, operator]) expect(about(r === serverA ? 'serverA' : r === followerB ? 'followerB' : 'operator', CREDENTIAL_CHANGE, agentUri(ts.issuer))).toHaveLength(1);
    expect(operator.got.filter((s) => s.type !== CREDENTIAL_CHANGE || s.claims.sub_id.uri !== ts.issuer).map((s) => s.claims.sub_id)).toEqual([
      { format: 'jwt_id', iss: ts.issuer, jti: jtiOf(a) },
      { format: 'jwt_id', iss: ts.issuer, jti: jtiOf(b) },
      { format: 'uri', uri: alice.id },
      { format: 'uri', uri: bob.id },
      { format: 'jwt_id', iss: ts.issuer, jti: jtiOf(own) },
    ]);
  });

  it('a disabled agent is announced to the resources it could reach and its followers, not to others', async () => {
    for (const r of Object.values(receivers)) r.got.length = 0;
    const carol = await registerSecretAgent(ts, { id: agentId('carol'), scopes: ['read'], audiences: [API_A] });
    const t = await token(carol, API_A);
    expect((await ts.admin('DELETE', `/admin/agents/${enc(carol.id)}`)).status).toBeLessThan(300);
    await drain();
    expect(about('serverA', SESSION_REVOKED, agentUri(carol.id))).toHaveLength(1);
    expect(about('serverA', SESSION_REVOKED, jwtId(jtiOf(t)))).toHaveLength(1);
    expect(about('operator', SESSION_REVOKED, agentUri(carol.id))).toHaveLength(1);
    expect(receivers.nosy.got).toEqual([]);
    expect(receivers.followerB.got).toEqual([]);
  });

  it('a token whose audience is a receiver\'s own id is that receiver\'s business', async () => {
    for (const r of Object.values(receivers)) r.got.length = 0;
    const { nosy } = receivers;
    const dave = await registerSecretAgent(ts, { id: agentId('dave'), scopes: ['read'], audiences: [nosy.client.agent.id] });
    const t = await token(dave, nosy.client.agent.id);
    expect((await ts.admin('POST', `/admin/tokens/${enc(jtiOf(t))}/revoke`)).status).toBe(200);
    await drain();
    expect(nosy.got.map((s) => s.claims.sub_id)).toEqual([{ format: 'jwt_id', iss: ts.issuer, jti: jtiOf(t) }]);
    expect(receivers.serverA.got).toEqual([]);
  });

  it('the grant is validated at registration', async () => {
    for (const ssf of [{ follows: ['not-a-spiffe-id'] }, { resources: ['ftp://x'] }, { all_subjects: 'yes' }, { everything: true }]) {
      const res = await ts.admin('POST', '/admin/agents', { id: agentId('bad-grant'), scopes: ['ssf.manage'], audiences: [ts.issuer], ssf });
      expect(res.status, JSON.stringify(ssf)).toBe(400);
      expect(res.body.error_description).toMatch(/ssf|everything/);
    }
    const ok = await ts.admin('PATCH', `/admin/agents/${enc(receivers.nosy.client.agent.id)}`, { ssf: { follows: [alice.id] } });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.ssf).toEqual({ follows: [alice.id] });
  });
});
