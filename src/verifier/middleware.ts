import type { IncomingHttpHeaders } from 'node:http';
import { VerificationError, VerificationUnavailableError } from './errors.js';
import type { HttpRequestLike, VerifiedRequest, Verifier } from './verifier.js';

export const PROTECTED_RESOURCE_METADATA_PATH = '/.well-known/oauth-protected-resource';

export interface ProtectedResourceMetadataOptions {
  /** The resource identifier (the `aud` this resource accepts). */
  resource: string;
  /** agent-sts's issuer, the authorization server. */
  issuer: string;
  scopes?: string[];
  resourceName?: string;
}

export interface GuardOptions {
  /** Scopes every request needs, or a function choosing them per request. */
  requiredScopes?: string[] | ((req: HttpRequestLike) => string[]);
  /**
   * The absolute URL of this resource's RFC 9728 metadata, named in challenges; by default, when `metadata` is
   * given, the URL of {@link protectedResourceMetadataUrl} for its resource.
   */
  resourceMetadataUrl?: string;
  /**
   * This resource's RFC 9728 metadata: the middleware answers `GET` at its well-known paths
   * ({@link protectedResourceMetadataPaths}) without verifying anything.
   */
  metadata?: ProtectedResourceMetadataOptions;
}

/**
 * The path of a resource's RFC 9728 metadata (§3.1): `/.well-known/oauth-protected-resource` inserted between the
 * host and the resource's path, so `https://tools.example/mcp` has it at `/.well-known/oauth-protected-resource/mcp`.
 */
export function protectedResourceMetadataPath(resource: string): string {
  const { pathname } = new URL(resource);
  return pathname === '/' ? PROTECTED_RESOURCE_METADATA_PATH : `${PROTECTED_RESOURCE_METADATA_PATH}${pathname}`;
}

/** The URL of a resource's RFC 9728 metadata (§3.1), at the resource's origin unless another `origin` is given. */
export function protectedResourceMetadataUrl(resource: string, origin?: string): string {
  const url = new URL(resource);
  return `${origin ?? url.origin}${protectedResourceMetadataPath(resource)}${url.search}`;
}

/**
 * The paths at which a resource's metadata is served: the path-inserted one of RFC 9728 §3.1 and, for clients that
 * look only there, `/.well-known/oauth-protected-resource` itself.
 */
export function protectedResourceMetadataPaths(resource: string): string[] {
  return [...new Set([protectedResourceMetadataPath(resource), PROTECTED_RESOURCE_METADATA_PATH])];
}

/** RFC 9728 protected-resource metadata naming agent-sts as the authorization server. */
export function protectedResourceMetadata(opts: ProtectedResourceMetadataOptions): Record<string, unknown> {
  return {
    resource: opts.resource,
    authorization_servers: [opts.issuer],
    bearer_methods_supported: ['header'],
    dpop_signing_alg_values_supported: ['EdDSA', 'ES256'],
    ...(opts.scopes ? { scopes_supported: opts.scopes } : {}),
    ...(opts.resourceName ? { resource_name: opts.resourceName } : {}),
  };
}

export interface GuardOutcome {
  ok: boolean;
  status: number;
  headers: Record<string, string>;
  body?: { error: string; error_description: string };
  verified?: VerifiedRequest;
}

/**
 * The framework-free guard: verifies a request and says what to answer when it is refused
 * (status, `WWW-Authenticate`, RFC 6750 error JSON).
 */
export async function guardRequest(verifier: Verifier, req: HttpRequestLike, opts: GuardOptions = {}): Promise<GuardOutcome> {
  const requiredScopes = typeof opts.requiredScopes === 'function' ? opts.requiredScopes(req) : opts.requiredScopes ?? [];
  const resourceMetadataUrl = opts.resourceMetadataUrl ?? (opts.metadata ? protectedResourceMetadataUrl(opts.metadata.resource) : undefined);
  try {
    const verified = await verifier.verifyRequest(req, { requiredScopes });
    return { ok: true, status: 200, headers: {}, verified };
  } catch (err) {
    if (err instanceof VerificationUnavailableError) {
      return {
        ok: false, status: 503, headers: { 'retry-after': String(err.retryAfter), 'cache-control': 'no-store' },
        body: { error: 'temporarily_unavailable', error_description: err.message },
      };
    }
    if (!(err instanceof VerificationError)) throw err;
    if (err.code === 'temporarily_unavailable') {
      return {
        ok: false, status: err.status, headers: { 'retry-after': String(err.retryAfterSeconds ?? 1), 'cache-control': 'no-store' },
        body: { error: err.code, error_description: err.message },
      };
    }
    return {
      ok: false,
      status: err.status,
      headers: {
        'www-authenticate': err.wwwAuthenticate({ ...(resourceMetadataUrl ? { resourceMetadata: resourceMetadataUrl } : {}), algs: ['EdDSA', 'ES256'] }),
        'cache-control': 'no-store',
      },
      body: { error: err.missing ? 'invalid_token' : err.code, error_description: err.message },
    };
  }
}

function absoluteUrl(proto: string, host: string | undefined, path: string): string {
  return `${proto}://${host ?? 'localhost'}${path}`;
}

/** The metadata to answer a request with: a `GET` of one of its well-known paths, when the guard has metadata. */
function metadataAnswer(opts: GuardOptions): (method: string, originalUrl: string) => Record<string, unknown> | undefined {
  if (!opts.metadata) return () => undefined;
  const metadata = protectedResourceMetadata(opts.metadata);
  const paths = protectedResourceMetadataPaths(opts.metadata.resource);
  return (method, originalUrl) => ((method === 'GET' || method === 'HEAD') && paths.includes(originalUrl.split('?')[0]!) ? metadata : undefined);
}

interface KoaLikeContext {
  method: string;
  protocol: string;
  host: string;
  originalUrl: string;
  headers: IncomingHttpHeaders;
  status: number;
  body: unknown;
  state: Record<string, unknown>;
  set(name: string, value: string): void;
}

/** koa middleware: verifies the request, puts the result in `ctx.state.agent`, or answers the refusal. */
export function koaGuard(verifier: Verifier, opts: GuardOptions = {}) {
  const answerMetadata = metadataAnswer(opts);
  return async (ctx: KoaLikeContext, next: () => Promise<unknown>): Promise<unknown> => {
    const metadata = answerMetadata(ctx.method, ctx.originalUrl);
    if (metadata) {
      ctx.body = metadata;
      return undefined;
    }
    const outcome = await guardRequest(verifier, { method: ctx.method, url: absoluteUrl(ctx.protocol, ctx.host, ctx.originalUrl), headers: ctx.headers }, opts);
    if (!outcome.ok) {
      ctx.status = outcome.status;
      for (const [k, v] of Object.entries(outcome.headers)) ctx.set(k, v);
      ctx.body = outcome.body;
      return undefined;
    }
    ctx.state.agent = outcome.verified;
    return next();
  };
}

interface ExpressLikeRequest {
  method: string;
  protocol: string;
  originalUrl: string;
  headers: IncomingHttpHeaders;
  get(name: string): string | undefined;
  agent?: VerifiedRequest;
}
interface ExpressLikeResponse {
  status(code: number): ExpressLikeResponse;
  set(name: string, value: string): ExpressLikeResponse;
  json(body: unknown): unknown;
}

/** Express middleware: verifies the request, puts the result in `req.agent`, or answers the refusal. */
export function expressGuard(verifier: Verifier, opts: GuardOptions = {}) {
  const answerMetadata = metadataAnswer(opts);
  return (req: ExpressLikeRequest, res: ExpressLikeResponse, next: (err?: unknown) => void): void => {
    const metadata = answerMetadata(req.method, req.originalUrl);
    if (metadata) {
      res.json(metadata);
      return;
    }
    guardRequest(verifier, { method: req.method, url: absoluteUrl(req.protocol, req.get('host'), req.originalUrl), headers: req.headers }, opts)
      .then((outcome) => {
        if (!outcome.ok) {
          for (const [k, v] of Object.entries(outcome.headers)) res.set(k, v);
          res.status(outcome.status).json(outcome.body);
          return;
        }
        req.agent = outcome.verified;
        next();
      }, next);
  };
}
