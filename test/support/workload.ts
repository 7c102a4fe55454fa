import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { createWpt } from '../../src/tokens/wpt.js';
import { tokenHash } from '../../src/tokens/token-hash.js';
import type { TestServer } from './test-server.js';
import { postForm } from './oauth-client.js';
import { readResponse } from './http.js';

export interface AgentKey {
  alg: 'EdDSA' | 'ES256';
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

/** A key pair an agent generates for itself; only `jwk` (public, with `alg`) is ever sent. */
export async function newAgentKey(alg: 'EdDSA' | 'ES256' = 'EdDSA'): Promise<AgentKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), alg } };
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}) {
  return readResponse(await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) }));
}

export const wpt = (wit: string, key: AgentKey, audience: string, extra: { lifetime?: number; accessToken?: string } = {}) =>
  createWpt({ wit, key: key.privateKey, alg: key.alg, audience, ...extra });

/** A WPT signed by `key` with the usual claims for `wit`, `claims` added or replacing them (an `aud` array, an `oth`). */
export async function wptWithClaims(wit: string, key: AgentKey, claims: Record<string, unknown>) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ exp: now + 60, jti: randomUUID(), wth: tokenHash(wit), ...claims }).setProtectedHeader({ typ: 'wpt+jwt', alg: key.alg }).setIssuedAt(now).sign(key.privateKey);
}

export async function workloadHeaders(ts: TestServer, wit: string, key: AgentKey, path: string) {
  return { 'workload-identity-token': wit, 'workload-proof-token': await wpt(wit, key, `${ts.issuer}${path}`) };
}

/** Redeems a fresh join token for the agent and returns a WIT bound to `key`. */
export async function witByJoinToken(ts: TestServer, agentId: string, key: AgentKey, extra: Record<string, unknown> = {}) {
  const jt = await ts.admin('POST', `/admin/agents/${encodeURIComponent(agentId)}/join-tokens`);
  if (jt.status !== 201) throw new Error(`join token: ${JSON.stringify(jt.body)}`);
  const res = await postJson(`${ts.url}/wit`, { agent_id: agentId, jwk: key.jwk, attestation: { type: 'join_token', token: jt.body.join_token }, ...extra });
  if (res.status !== 200) throw new Error(`wit: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.wit as string;
}

/** Client credentials authenticated with WIT + WPT. */
export async function tokenWithWit(ts: TestServer, agentId: string, wit: string, key: AgentKey, form: Record<string, string> = {}) {
  return postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: agentId, ...form }, await workloadHeaders(ts, wit, key, '/token'));
}

/** A small external OIDC-style issuer with a JWKS endpoint, as a Kubernetes cluster or CI system would be. */
export class TestIssuer {
  private server!: Server;
  url = '';
  private key!: CryptoKey;
  jwk!: JWK;

  async start(): Promise<this> {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    this.key = privateKey;
    this.jwk = { ...(await exportJWK(publicKey)), kid: 'test-issuer-1', alg: 'ES256', use: 'sig' };
    this.server = createServer((req, res) => {
      if (req.url === '/jwks') {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ keys: [this.jwk] }));
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  sign(claims: Record<string, unknown>, opts: { expiresIn?: number; key?: CryptoKey; kid?: string; typ?: string } = {}) {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: this.url, aud: 'agent-sts', iat: now, exp: now + (opts.expiresIn ?? 600), ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: opts.kid ?? 'test-issuer-1', typ: opts.typ ?? 'JWT' })
      .sign(opts.key ?? this.key);
  }

  trustedIssuersEnv(): string {
    return JSON.stringify([{ issuer: this.url, jwks_uri: `${this.url}/jwks`, audience: 'agent-sts' }]);
  }

  close() {
    return new Promise<void>((r) => this.server.close(() => r()));
  }
}
