import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { registeredClaimsProblem, signJwt, verifyOurJwt } from '../../src/tokens/our-jwt.js';

// The server's own check of the JWTs it signed (WITs, presented access and Txn-Tokens); the verifier
// library runs the same claim checks (see the adversarial suite's time, issuer and audience categories).
const ISSUER = 'https://sts.example';
const NOW = 1_800_000_000;
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const signer = { kid: 'k1', alg: 'EdDSA', key: privateKey };
const keyFor = async (kid: string | undefined) => (kid === 'k1' ? { key: publicKey, alg: 'EdDSA' } : undefined);
const good = { iss: ISSUER, sub: 'spiffe://example.org/a', jti: 'j1', iat: NOW, exp: NOW + 300, aud: 'https://api.example' };

async function verify(claims: Record<string, unknown>, audience?: string) {
  const token = await signJwt('at+jwt', claims, signer);
  return verifyOurJwt(token, { typ: 'at+jwt', what: 'access token', issuer: ISSUER, keyFor, now: NOW, ...(audience ? { audience } : {}) });
}

const without = (claim: keyof typeof good) => Object.fromEntries(Object.entries(good).filter(([k]) => k !== claim));

describe('registered claims of the server\'s own JWTs', () => {
  it('accepts a token whose claims hold, within the clock tolerance', async () => {
    await expect(verify(good, 'https://api.example')).resolves.toMatchObject({ jti: 'j1' });
    await expect(verify({ ...good, iat: NOW + 5, nbf: NOW + 5, exp: NOW - 4 })).resolves.toMatchObject({ jti: 'j1' });
    await expect(verify({ ...good, aud: ['x', 'https://api.example'] }, 'https://api.example')).resolves.toMatchObject({ jti: 'j1' });
  });

  it.each([
    ['no sub', without('sub'), 'the access token sub claim is not valid (missing)'],
    ['a numeric sub', { ...good, sub: 7 }, 'the access token sub claim is not valid (missing)'],
    ['no jti', without('jti'), 'the access token jti claim is not valid (missing)'],
    ['no exp', without('exp'), 'the access token exp claim is not valid (missing)'],
    ['exp as a string', { ...good, exp: String(NOW + 300) }, 'the access token exp claim is not valid (missing)'],
    ['no iat', without('iat'), 'the access token iat claim is not valid (missing)'],
    ['another issuer', { ...good, iss: 'https://other.example' }, 'the access token iss claim is not valid (unexpected "iss" claim value)'],
    ['expired', { ...good, exp: NOW - 5 }, 'the access token has expired'],
    ['not yet valid', { ...good, nbf: NOW + 6 }, 'the access token nbf claim is not valid (not yet valid)'],
    ['nbf as a string', { ...good, nbf: String(NOW) }, 'the access token nbf claim is not valid (not yet valid)'],
    ['nbf null', { ...good, nbf: null }, 'the access token nbf claim is not valid (not yet valid)'],
  ])('refuses %s', async (_, claims, message) => {
    await expect(verify(claims)).rejects.toThrow(message);
  });

  it('leaves iat ahead of its clock to the verifier library, which refuses it', async () => {
    await expect(verify({ ...good, iat: NOW + 3600 })).resolves.toMatchObject({ jti: 'j1' });
    expect(registeredClaimsProblem({ ...good, iat: NOW + 6 }, { issuer: ISSUER, now: NOW, tolerance: 5, refuseFutureIat: true })).toEqual({ claim: 'iat', problem: 'in the future' });
    expect(registeredClaimsProblem({ ...good, iat: NOW + 5 }, { issuer: ISSUER, now: NOW, tolerance: 5, refuseFutureIat: true })).toBeUndefined();
  });

  it('refuses a token for another audience when one is expected', async () => {
    for (const aud of ['https://other.example', ['https://other.example'], [], undefined]) {
      await expect(verify({ ...good, aud }, 'https://api.example')).rejects.toThrow('the access token aud claim is not valid (unexpected "aud" claim value)');
    }
  });
});
