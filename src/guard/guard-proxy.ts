import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { guardRequest, protectedResourceMetadata, protectedResourceMetadataPaths, protectedResourceMetadataUrl } from '../verifier/middleware.js';
import type { VerifiedRequest, Verifier } from '../verifier/verifier.js';
import { requiredScopes, type ScopePolicy } from './scope-policy.js';

export interface GuardProxyOptions {
  upstream: string;
  verifier: Verifier;
  /** This guard's resource identifier (the `aud` it accepts). */
  resource: string;
  issuer: string;
  policy: ScopePolicy;
  logger: Logger;
  /** Largest request body inspected for MCP methods (default 1 MiB). */
  maxBodyBytes?: number;
}

/** Headers the guard sets for the upstream; a client sending any of them is stripped of it. */
export const IDENTITY_HEADERS = ['x-agent-sts-subject', 'x-agent-sts-client', 'x-agent-sts-actors', 'x-agent-sts-txn', 'x-agent-sts-scopes', 'x-agent-sts-token-type'];
/** Credentials stay at the guard: the upstream gets the verified identity instead. */
const CREDENTIAL_HEADERS = ['authorization', 'dpop', 'txn-token', 'workload-identity-token', 'workload-proof-token'];
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host', 'content-length'];

/** A Host header value: a DNS name, IPv4 address or bracketed IPv6 address, and an optional port. */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?$/;

function parseUrl(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

/** The upstream URL for a request target, or undefined unless the target is a path on the upstream itself. */
function originFormTarget(upstream: URL, requestTarget: string): URL | undefined {
  if (!requestTarget.startsWith('/')) return undefined;
  const target = parseUrl(`${upstream.origin}${requestTarget}`);
  return target?.origin === upstream.origin ? target : undefined;
}

function identityHeaders(v: VerifiedRequest): Record<string, string> {
  const t = v.accessToken ?? v.txnToken ?? v.workload!;
  return {
    'x-agent-sts-subject': t.subject,
    ...(t.clientId ? { 'x-agent-sts-client': t.clientId } : {}),
    ...(t.actors.length ? { 'x-agent-sts-actors': t.actors.join(' ') } : {}),
    ...((v.txnToken?.txn ?? t.txn) ? { 'x-agent-sts-txn': (v.txnToken?.txn ?? t.txn)! } : {}),
    'x-agent-sts-scopes': t.scopes.join(' '),
    'x-agent-sts-token-type': t.type,
  };
}

async function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > max) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * A reverse proxy that verifies every request before it reaches an HTTP or MCP (Streamable HTTP) server:
 * MCP `tools/call` maps to a scope, refusals get their status and `WWW-Authenticate`, identity headers a
 * client sends are stripped, and the verified identity is forwarded in `X-Agent-STS-*` headers. Responses,
 * streamed ones included, are piped back as they come.
 */
export function createGuardProxy(opts: GuardProxyOptions): Server {
  const upstream = new URL(opts.upstream);
  const send = upstream.protocol === 'https:' ? httpsRequest : httpRequest;
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024;
  const metadata = protectedResourceMetadata({ resource: opts.resource, issuer: opts.issuer });
  const metadataPaths = protectedResourceMetadataPaths(opts.resource);
  const resourceUrl = new URL(opts.resource);

  const refuse = (res: ServerResponse, status: number, headers: Record<string, string>, body: unknown) => {
    res.writeHead(status, { ...headers, 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  return createServer((req, res) => {
    (async () => {
      const host = req.headers.host ?? `127.0.0.1`;
      // Only an origin-form target (a path) under a plain Host: an absolute-form or protocol-relative
      // target would otherwise resolve to another server than the upstream.
      const target = originFormTarget(upstream, req.url ?? '/');
      const called = HOST.test(host) ? parseUrl(`http://${host}${req.url ?? '/'}`) : undefined;
      if (!target || !called) {
        refuse(res, 400, {}, { error: 'invalid_request', error_description: 'the request target or Host header is not valid' });
        return;
      }
      const url = called.href;
      const path = called.pathname;
      if (metadataPaths.includes(path) && req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(metadata));
        return;
      }
      const body = req.method === 'GET' || req.method === 'HEAD' ? Buffer.alloc(0) : await readBody(req, maxBody);
      if (!body) {
        refuse(res, 413, {}, { error: 'invalid_request', error_description: `the body is larger than ${maxBody} bytes` });
        return;
      }
      let parsed: unknown;
      if (body.length && /json/i.test(req.headers['content-type'] ?? '')) {
        try {
          parsed = JSON.parse(body.toString('utf8'));
        } catch {
          refuse(res, 400, {}, { error: 'invalid_request', error_description: 'the body is not valid JSON' });
          return;
        }
      }
      const scopes = requiredScopes(opts.policy, parsed);
      const outcome = await guardRequest(opts.verifier, { method: req.method ?? 'GET', url, headers: req.headers }, {
        // The path-inserted URL of RFC 9728 §3.1, at the resource's origin when called by its name, else where called.
        requiredScopes: scopes, resourceMetadataUrl: protectedResourceMetadataUrl(opts.resource, host === resourceUrl.host ? resourceUrl.origin : `http://${host}`),
      });
      if (!outcome.ok) {
        opts.logger.info({ decision: 'refused', method: req.method, path, status: outcome.status, reason: outcome.body?.error_description }, 'guard');
        refuse(res, outcome.status, outcome.headers, outcome.body);
        return;
      }
      const identity = identityHeaders(outcome.verified!);
      opts.logger.info({ decision: 'allowed', method: req.method, path, subject: identity['x-agent-sts-subject'], client: identity['x-agent-sts-client'], scopes }, 'guard');

      const headers: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        const name = k.toLowerCase();
        if (v === undefined || HOP_BY_HOP.includes(name) || CREDENTIAL_HEADERS.includes(name) || name.startsWith('x-agent-sts-')) continue;
        headers[name] = v;
      }
      Object.assign(headers, identity, { host: upstream.host, 'content-length': String(body.length) });
      const proxied = send(target, { method: req.method, headers }, (up) => {
        const out: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_BY_HOP.includes(k)) out[k] = v;
        res.writeHead(up.statusCode ?? 502, out);
        up.pipe(res);
      });
      proxied.on('error', () => {
        if (!res.headersSent) refuse(res, 502, {}, { error: 'bad_gateway', error_description: 'the upstream did not answer' });
        else res.destroy();
      });
      res.on('close', () => proxied.destroy());
      proxied.end(body);
    })().catch((err: Error) => {
      opts.logger.error({ err: { message: err.message } }, 'guard error');
      if (!res.headersSent) refuse(res, 500, {}, { error: 'server_error', error_description: 'internal error' });
      else res.destroy();
    });
  });
}

export async function listenGuard(server: Server, port: number, host = '127.0.0.1'): Promise<number> {
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return (server.address() as AddressInfo).port;
}
