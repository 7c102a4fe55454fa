import * as client from 'openid-client';
import { readResponse } from './http.js';
import { createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, type CryptoKey, type JWK } from 'jose';

/** An openid-client configuration for an agent, found through the server's RFC 8414 metadata. */
export async function discover(issuer: string, clientId: string, auth: client.ClientAuth, metadata: Partial<client.ClientMetadata> = {}): Promise<client.Configuration> {
  return client.discovery(new URL(issuer), clientId, metadata, auth, {
    execute: [client.allowInsecureRequests],
    algorithm: 'oauth2',
  });
}

/** Verifies an access token as a resource server would: keys from the discovered `jwks_uri`, `typ: at+jwt`. */
export async function verifyAccessToken(config: client.Configuration, token: string, audience: string) {
  const jwksUri = config.serverMetadata().jwks_uri!;
  const jwks = createRemoteJWKSet(new URL(jwksUri));
  return jwtVerify(token, jwks, { issuer: config.serverMetadata().issuer, audience, typ: 'at+jwt' });
}

export async function agentKeyPair(alg: 'EdDSA' | 'ES256' = 'EdDSA'): Promise<{ privateKey: CryptoKey; publicKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), alg, use: 'sig', kid: `${alg}-1` };
  return { privateKey, publicKey, jwk };
}

/** POSTs a form to the server and returns status and parsed JSON. */
export async function postForm(url: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  return readResponse(await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
  }));
}

export const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

export { client };
