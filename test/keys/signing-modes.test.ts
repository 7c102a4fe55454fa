import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { signJwsInput } from '../../src/tokens/compact-jws.js';
import { agentId, startTestServer, TRUST_DOMAIN, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';

const API = 'https://api.example.com';

describe('signing on the event loop or on the thread pool (SIGN_ON_THREAD_POOL)', () => {
  const ed = generateKeyPairSync('ed25519');
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const input = Buffer.from('header.payload');

  for (const threadPool of [false, true]) {
    it(`signs EdDSA and ES256 (JWS form) and refuses anything else${threadPool ? ', on the thread pool' : ''}`, async () => {
      const edSig = await signJwsInput('EdDSA', input, ed.privateKey, threadPool);
      expect(verify(null, input, ed.publicKey, edSig)).toBe(true);
      const ecSig = await signJwsInput('ES256', input, ec.privateKey, threadPool);
      expect(ecSig).toHaveLength(64); // r || s, as JWS wants it, not DER
      expect(verify('sha256', input, { key: ec.publicKey, dsaEncoding: 'ieee-p1363' }, ecSig)).toBe(true);
      // Failures are rejected promises, never exceptions thrown at the caller.
      await expect(signJwsInput('RS256', input, ed.privateKey, threadPool)).rejects.toThrow(/unsupported signing alg/);
      await expect(signJwsInput('EdDSA', input, createPublicKey(ed.privateKey), threadPool)).rejects.toThrow();
    });
  }

  it('has the signature at once on the event loop, and only after a pool thread made it otherwise', async () => {
    // Whether the promise settles within a few microtasks, that is without the event loop turning.
    const settled = async (p: Promise<Buffer>) => {
      let done = false;
      void p.then(() => { done = true; });
      for (let i = 0; i < 3; i++) await Promise.resolve();
      return done ? 'signed' : 'pending';
    };
    expect(await settled(signJwsInput('EdDSA', input, ed.privateKey, false))).toBe('signed');
    const pooled = signJwsInput('EdDSA', input, ed.privateKey, true);
    expect(await settled(pooled)).toBe('pending');
    expect(verify(null, input, ed.publicKey, await pooled)).toBe(true);
  });

  describe('a server with SIGN_ON_THREAD_POOL=true', () => {
    let ts: TestServer;
    let secret: string;
    const id = agentId('pool-signed');
    beforeAll(async () => {
      ts = await startTestServer({ SIGN_ON_THREAD_POOL: 'true' });
      secret = (await ts.admin('POST', '/admin/agents', { id, scopes: ['tools:read'], audiences: [API], grant_types: ['client_credentials', 'urn:ietf:params:oauth:grant-type:token-exchange'], token_exchange: { may_act_for_others: true } })).body.client_secret;
    });
    afterAll(async () => {
      await ts?.close();
    });

    it('issues access tokens and Txn-Tokens that verify against its JWKS', async () => {
      const jwks = createRemoteJWKSet(new URL(`${ts.url}/jwks`));
      const cc = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, secret) });
      expect(cc.status, JSON.stringify(cc.body)).toBe(200);
      await jwtVerify(cc.body.access_token, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
      const txn = await postForm(`${ts.url}/token`, {
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: cc.body.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token', requested_token_type: 'urn:ietf:params:oauth:token-type:txn_token',
        audience: TRUST_DOMAIN, scope: 'tools:read',
      }, { authorization: basic(id, secret) });
      expect(txn.status, JSON.stringify(txn.body)).toBe(200);
      await jwtVerify(txn.body.access_token, jwks, { issuer: ts.issuer, audience: TRUST_DOMAIN, typ: 'txntoken+jwt' });
    });
  });
});
