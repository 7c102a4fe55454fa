import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import type { TestServer } from '../support/test-server.js';
import { agentId } from '../support/test-server.js';
import { readResponse } from '../support/http.js';
import { registerSecretAgent, type SecretAgent } from '../support/agents.js';

export const PUSH = 'urn:ietf:rfc:8935';
export const POLL = 'urn:ietf:rfc:8936';
export const CAEP = 'https://schemas.openid.net/secevent/caep/event-type';
export const SESSION_REVOKED = `${CAEP}/session-revoked`;
export const CREDENTIAL_CHANGE = `${CAEP}/credential-change`;
export const TOKEN_CLAIMS_CHANGE = `${CAEP}/token-claims-change`;
export const VERIFICATION = 'https://schemas.openid.net/secevent/ssf/event-type/verification';
export const STREAM_UPDATED = 'https://schemas.openid.net/secevent/ssf/event-type/stream-updated';

/** A stream receiver registered as an agent allowed to get `ssf.manage` tokens for the issuer. */
export interface SsfClient {
  agent: SecretAgent;
  token: string;
  call(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: any; headers: Headers }>;
}

/**
 * Registers a receiver. `ssf` is the admin's grant of what its streams may carry: by default every subject
 * (an operator's receiver); `{}` for an agent that gets only the events it has a stake in.
 */
export async function ssfClient(ts: TestServer, name: string, ssf: Record<string, unknown> = { all_subjects: true }): Promise<SsfClient> {
  const agent = await registerSecretAgent(ts, { id: agentId(name), scopes: ['ssf.manage', 'other'], audiences: [ts.issuer, 'https://elsewhere.example'], ssf });
  const res = await agent.token({ grant_type: 'client_credentials', resource: ts.issuer, scope: 'ssf.manage' });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  const token = res.body.access_token as string;
  return {
    agent,
    token,
    call: (method, path, body, t = token) => call(ts, method, path, t, body),
  };
}

export async function call(ts: TestServer, method: string, path: string, token: string | undefined, body?: unknown) {
  return readResponse(await fetch(path.startsWith('http') ? path : `${ts.url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  }));
}

export interface ReceivedSet {
  set: string;
  header: Record<string, unknown>;
  claims: JWTPayload & { sub_id: Record<string, string>; events: Record<string, Record<string, unknown>> };
  type: string;
  at: number;
  authorization: string | undefined;
  /** Poll receivers: acknowledged already. */
  acked?: boolean;
}

export function parseSet(set: string, authorization?: string): ReceivedSet {
  const claims = decodeJwt(set) as ReceivedSet['claims'];
  return { set, header: decodeProtectedHeader(set) as Record<string, unknown>, claims, type: Object.keys(claims.events)[0]!, at: Date.now(), authorization };
}

/** An RFC 8935 push receiver: collects every SET it is sent; can go down and come back on the same port. */
export class PushReceiver {
  readonly received: ReceivedSet[] = [];
  private server: Server | undefined;
  port = 0;
  host = '127.0.0.1';
  /** Answer with this status instead of 202 (503 to fail, 400 to refuse). */
  failWith: number | undefined;

  async start(port = 0, host = this.host): Promise<this> {
    this.host = host;
    this.server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (this.failWith) {
          res.writeHead(this.failWith, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ err: 'invalid_request', description: 'refused by the test receiver' }));
          return;
        }
        expect(req.headers['content-type']).toBe('application/secevent+jwt');
        expect(req.headers.accept).toBe('application/json');
        this.received.push(parseSet(Buffer.concat(chunks).toString(), req.headers.authorization));
        res.writeHead(202);
        res.end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(port, host, () => resolve()));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://${this.host}:${this.port}/events`;
  }

  async stop(): Promise<void> {
    const srv = this.server;
    this.server = undefined;
    if (!srv) return;
    await new Promise<void>((resolve) => {
      srv.close(() => resolve());
      srv.closeAllConnections();
    });
  }

  of(type: string): ReceivedSet[] {
    return this.received.filter((r) => r.type === type);
  }
}

/** Waits until `check` returns a truthy value, up to `ms`. */
export async function until<T>(check: () => T | Promise<T>, ms = 1000, what = 'condition'): Promise<Exclude<T, false | undefined | null | 0 | ''>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v as Exclude<T, false | undefined | null | 0 | ''>;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Verifies a SET as a receiver: keys from our JWKS, `typ: secevent+jwt`, the stream's audience; no `sub`, no `exp`. */
export async function verifySet(ts: TestServer, set: string, audience: string) {
  const jwks = createRemoteJWKSet(new URL(`${ts.issuer}/jwks`));
  const { payload, protectedHeader } = await jwtVerify(set, jwks, { issuer: ts.issuer, audience, typ: 'secevent+jwt' });
  expect(payload.sub).toBeUndefined();
  expect(payload.exp).toBeUndefined();
  expect(typeof payload.jti).toBe('string');
  expect(typeof payload.iat).toBe('number');
  expect(Object.keys(payload.events as object)).toHaveLength(1);
  return { payload: payload as ReceivedSet['claims'], protectedHeader };
}

/** A poll receiver's request (RFC 8936). */
export async function poll(ts: TestServer, c: SsfClient, url: string, body: Record<string, unknown>) {
  const res = await call(ts, 'POST', url, c.token, body);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { sets: Record<string, string>; moreAvailable: boolean };
}
