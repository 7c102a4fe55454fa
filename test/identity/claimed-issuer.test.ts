import { describe, expect, it } from 'vitest';
import { claimedIssuer } from '../../src/identity/trusted-issuers.js';

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const jwt = (claims: unknown, header: unknown = { alg: 'EdDSA', typ: 'JWT' }) => `${b64(header)}.${b64(claims)}.${b64('signature')}`;

describe('claimedIssuer (the unverified iss that picks how a token is verified)', () => {
  it('reads iss from a compact JWS without checking header or signature', () => {
    expect(claimedIssuer(jwt({ iss: 'https://idp.example', sub: 'alice' }))).toBe('https://idp.example');
    expect(claimedIssuer(`x.${b64({ iss: 'https://idp.example' })}.`)).toBe('https://idp.example');
  });

  it('is undefined for anything else', () => {
    const claims = b64({ iss: 'https://idp.example' });
    for (const token of [
      undefined, '', 'abc', `a.${claims}`, `a.${claims}.b.c.d`, `a.${claims}.b.c`, // not three segments (a JWE has five)
      jwt({ iss: 42 }), jwt({ sub: 'alice' }), jwt([{ iss: 'https://idp.example' }]), jwt('"https://idp.example"'), jwt('null'),
      `a.${claims}=.b`, `a.${claims.slice(0, 5)}+${claims.slice(5)}.b`, `a.${claims.slice(0, 5)}*${claims.slice(5)}.b`, // not strict base64url
      `a..b`, `a.${b64('{"iss":')}.b`,
    ]) expect(claimedIssuer(token), String(token)).toBeUndefined();
  });
});
