import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { TestIssuer } from '../support/workload.js';
import { AT, exchange, JWT, registerSecretAgent, TOKEN_EXCHANGE, TXN, type SecretAgent } from '../support/agents.js';

const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const BISCUIT = 'urn:agent-sts:params:oauth:token-type:biscuit';
const SPEC_API = 'https://specialist.example/api';

/**
 * A subject token of a trusted external issuer: a Txn-Token of another trust domain is never one (it is valid
 * only inside its own), whatever it is presented as and whatever is asked for; an `act` claim that is no chain
 * of actors, or nests deeper than the server's maximum delegation depth + 1, is refused rather than read in part.
 */
describe('token exchange: an external issuer\'s subject token', () => {
  let ts: TestServer;
  let tts: TestIssuer;
  let agent: SecretAgent;

  beforeAll(async () => {
    tts = await new TestIssuer().start();
    ts = await startTestServer({ TRUSTED_ISSUERS: tts.trustedIssuersEnv() });
    // The server is its own partner domain: JWT authorization grants may be asked for it.
    await ts.restart({ PARTNER_DOMAINS: JSON.stringify([{ issuer: ts.issuer, jwks_uri: `${ts.issuer}/jwks` }]) });
    agent = await registerSecretAgent(ts, {
      id: agentId('foreign-subjects'), grant_types: [TOKEN_EXCHANGE], scopes: ['orders:read'], audiences: [SPEC_API, ts.issuer],
      token_exchange: { may_act_for_others: true, subject_issuers: [tts.url] },
    });
  });
  afterAll(async () => {
    await ts?.close();
    await tts?.close();
  });

  const foreign = (claims: Record<string, unknown> = {}, typ?: string) => tts.sign({
    sub: 'user:alice', scope: 'orders:read', jti: `j-${Math.random()}`, ...claims,
  }, typ ? { typ } : {});
  const asked = (requested: string): Record<string, string> => {
    if (requested === TXN) return { requested_token_type: TXN, audience: TRUST_DOMAIN };
    if (requested === JWT) return { requested_token_type: JWT, audience: ts.issuer };
    if (requested === BISCUIT) return { requested_token_type: BISCUIT, audience: SPEC_API };
    return { requested_token_type: AT, resource: SPEC_API };
  };

  it('control: the issuer\'s identity token is exchanged for an access token', async () => {
    const res = await exchange(agent, { subject_token: await foreign(), subject_token_type: ID_TOKEN, ...asked(AT) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(decodeJwt(res.body.access_token).sub).toBe('user:alice');
  });

  for (const type of [ID_TOKEN, JWT]) {
    for (const requested of [AT, TXN, JWT, BISCUIT]) {
      it(`a foreign Txn-Token as ${type.split(':').pop()} for ${requested.split(':').pop()}: 400 invalid_request`, async () => {
        const txnToken = await foreign({ txn: 'foreign-txn-1', req_wl: 'spiffe://other.example/wl' }, 'txntoken+jwt');
        const res = await exchange(agent, { subject_token: txnToken, subject_token_type: type, ...asked(requested) });
        expect(res.status, JSON.stringify(res.body)).toBe(400);
        expect(res.body.error).toBe('invalid_request');
        expect(res.body.error_description).toMatch(/a Txn-Token is valid only inside its trust domain/);
        expect(res.headers.get('cache-control')).toMatch(/no-store/);
      });
    }
  }

  it('a foreign Txn-Token\'s typ is matched case-insensitively, with or without application/', async () => {
    for (const typ of ['application/txntoken+jwt', 'TxnToken+JWT', 'Application/TXNTOKEN+JWT']) {
      const res = await exchange(agent, { subject_token: await foreign({ txn: 'foreign-txn-2' }, typ), subject_token_type: JWT, ...asked(AT) });
      expect(res.status, `${typ}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.error_description).toMatch(/valid only inside its trust domain/);
    }
  });

  it('a token re-encoded outside strict base64url (padded or spaced signature) is refused before it is read', async () => {
    const txnToken = await foreign({ txn: 'foreign-txn-3' }, 'txntoken+jwt');
    const idToken = await foreign({});
    for (const [name, variant, type] of [
      ['Txn-Token, == / jwt', `${txnToken}==`, JWT],
      ['Txn-Token, == / id_token', `${txnToken}==`, ID_TOKEN],
      ['Txn-Token, space in the signature', txnToken.replace(/\.([^.]+)$/, '. $1'), JWT],
      ['identity token, ==', `${idToken}==`, ID_TOKEN],
    ] as const) {
      const res = await exchange(agent, { subject_token: variant, subject_token_type: type, ...asked(AT) });
      expect(res.status, `${name}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.error, name).toBe('invalid_grant');
      expect(res.body.error_description, name).toMatch(/not a compact JWS/);
    }
  });

  it('an act claim with an entry that is no actor is refused, not cut short', async () => {
    for (const act of [{ sub: 'spiffe://other.example/a', act: { client_id: 'b' } }, { sub: 'spiffe://other.example/a', act: null }, { sub: 7 }, 'spiffe://other.example/a', [{ sub: 'a' }]]) {
      const res = await exchange(agent, { subject_token: await foreign({ act }), subject_token_type: ID_TOKEN, ...asked(AT) });
      expect(res.status, `${JSON.stringify(act)}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.error).toBe('invalid_grant');
      expect(res.body.error_description).toMatch(/malformed act claim/);
    }
  });

  it('an act claim nested deeper than the maximum delegation depth + 1 is refused as malformed', async () => {
    const chain = (n: number) => Array.from({ length: n }, (_, i) => `spiffe://other.example/a${i}`)
      .reduceRight<Record<string, unknown> | undefined>((act, sub) => ({ sub, ...(act ? { act } : {}) }), undefined);
    // Default MAX_DELEGATION_DEPTH is 5: six entries are read (and then too deep with the requester), seven are not.
    const six = await exchange(agent, { subject_token: await foreign({ act: chain(6) }), subject_token_type: ID_TOKEN, ...asked(AT) });
    expect(six.status, JSON.stringify(six.body)).toBe(400);
    expect(six.body.error_description).toMatch(/delegation depth 7 exceeds/);
    for (const n of [7, 500]) {
      const res = await exchange(agent, { subject_token: await foreign({ act: chain(n) }), subject_token_type: ID_TOKEN, ...asked(AT) });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.error).toBe('invalid_grant');
      expect(res.body.error_description).toMatch(/malformed act claim: nested deeper than 6/);
    }
    // Control: a chain of two is kept whole, with the requester outermost.
    const two = await exchange(agent, { subject_token: await foreign({ act: chain(2) }), subject_token_type: ID_TOKEN, ...asked(AT) });
    expect(two.status, JSON.stringify(two.body)).toBe(200);
    expect(decodeJwt(two.body.access_token).act).toEqual({ sub: agent.id, act: chain(2) });
  });
});
