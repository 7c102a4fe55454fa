import { importJWK, SignJWT, type JWK } from 'jose';
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
