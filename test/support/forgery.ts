import { KeyObject, sign } from 'node:crypto';
import { importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import type { TestServer } from './test-server.js';

/** The server's active signing key, read from its database (tests run with keys unencrypted): to mint tokens the server never issued. */
export async function serverSigningKey(ts: TestServer, alg: 'EdDSA' | 'ES256' = 'EdDSA') {
  const row = await ts.server.db.knex('signing_keys').where({ status: 'active', alg }).first();
  const jwk = JSON.parse(row.private_jwk) as JWK;
  return { key: await importJWK(jwk, alg), kid: jwk.kid!, alg };
}

/** Signs arbitrary claims with the server's key. */
export async function signAsServer(ts: TestServer, claims: Record<string, unknown>, header: Record<string, unknown> = {}) {
  const { key, kid, alg } = await serverSigningKey(ts);
  return new SignJWT(claims).setProtectedHeader({ alg, kid, typ: 'at+jwt', ...header }).sign(key);
}

/**
 * JSON text of `value` with one more member whose value is JSON text as it is: what JSON.stringify can't write
 * (nesting thousands of levels deep).
 */
export function withRawMember(value: Record<string, unknown>, name: string, raw: string): string {
  const text = JSON.stringify(value);
  return `${text.slice(0, -1)}${text === '{}' ? '' : ','}${JSON.stringify(name)}:${raw}}`;
}

/** An EdDSA JWS over a header and claims given as JSON text, signed by `key` (Ed25519). */
export function signJsonText(header: string, claims: string, key: KeyObject | CryptoKey): string {
  const input = `${Buffer.from(header).toString('base64url')}.${Buffer.from(claims).toString('base64url')}`;
  const keyObject = key instanceof KeyObject ? key : KeyObject.from(key);
  return `${input}.${sign(null, Buffer.from(input), keyObject).toString('base64url')}`;
}
