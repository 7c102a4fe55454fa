import { z } from 'zod';
import type { StreamRecord } from '../storage/ssf-repo.js';
import { EVENTS_SUPPORTED, REQUESTABLE_EVENTS, type SubjectId } from '../tokens/security-event.js';
import { PUSH_METHOD } from './push.js';

export const POLL_METHOD = 'urn:ietf:rfc:8936';
export const DELIVERY_METHODS = [PUSH_METHOD, POLL_METHOD];

/** A stream-management request the transmitter refuses: SSF's status codes with a description. */
export class StreamError extends Error {
  /** `retryAfter`: seconds before a 429 or 503 request may succeed (`Retry-After`). */
  constructor(readonly status: 400 | 403 | 404 | 409 | 429 | 503, readonly code: string, description: string, readonly retryAfter = 1) {
    super(description);
    this.name = 'StreamError';
  }
}

/** Which push endpoints may be used: `http` allows plain http to `localhost` (loopback) only, to any host, or never. */
export type HttpPolicy = 'localhost' | 'true' | 'false';

const LOOPBACK = new Set(['localhost', '[::1]']);
const IPV4_LOOPBACK = /^127(\.\d{1,3}){3}$/;

/** Why a push endpoint URL may not be used, or undefined when it may. */
export function pushEndpointRefusal(url: string, allowHttp: HttpPolicy): string | undefined {
  const u = URL.parse(url);
  if (!u) return 'endpoint_url must be an absolute URL';
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'endpoint_url must be an http(s) URL';
  if (u.username || u.password) return 'endpoint_url must not carry credentials: use authorization_header';
  if (u.hash) return 'endpoint_url must not have a fragment';
  if (u.protocol === 'http:') {
    if (allowHttp === 'false') return 'endpoint_url must be https';
    if (allowHttp === 'localhost' && !LOOPBACK.has(u.hostname) && !IPV4_LOOPBACK.test(u.hostname)) return 'endpoint_url must be https (plain http is allowed for loopback addresses only)';
  }
  return undefined;
}

/** A lone UTF-16 surrogate: not a character, and not storable as JSON text. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const text = (max: number) => z.string().max(max)
  .refine((v) => !/[\u0000-\u001f\u007f]/.test(v), 'must not contain control characters')
  .refine((v) => !LONE_SURROGATE.test(v), 'must be well-formed Unicode');

const delivery = z.object({
  method: z.enum(DELIVERY_METHODS as [string, ...string[]], { error: `must be one of ${DELIVERY_METHODS.join(', ')}` }),
  endpoint_url: text(2048).optional(),
  authorization_header: text(4096).min(1).optional(),
}).strict();

/** Members the transmitter supplies: accepted in requests (a receiver may send back what it read) and ignored. */
const transmitterSupplied = {
  iss: z.unknown().optional(),
  aud: z.unknown().optional(),
  events_supported: z.unknown().optional(),
  events_delivered: z.unknown().optional(),
  min_verification_interval: z.unknown().optional(),
  inactivity_timeout: z.unknown().optional(),
};

const receiverSupplied = {
  delivery: delivery.optional(),
  events_requested: z.array(text(512).min(1)).max(32).optional(),
  description: text(1000).nullable().optional(),
};

export const streamIdSchema = text(64).min(1);

export const createSchema = z.object({ ...receiverSupplied, ...transmitterSupplied, stream_id: z.unknown().optional() }).strict();
export const changeSchema = z.object({ ...receiverSupplied, ...transmitterSupplied, stream_id: streamIdSchema }).strict();

export const statusSchema = z.object({
  stream_id: streamIdSchema,
  status: z.enum(['enabled', 'paused', 'disabled'], { error: 'must be enabled, paused or disabled' }),
  reason: text(500).optional(),
}).strict();

const subject = z.discriminatedUnion('format', [
  z.object({ format: z.literal('jwt_id'), iss: text(2048).min(1), jti: text(256).min(1) }).strict(),
  z.object({ format: z.literal('uri'), uri: text(2048).min(1) }).strict(),
  z.object({ format: z.literal('opaque'), id: text(256).min(1) }).strict(),
], { error: 'subject must be a subject identifier of format jwt_id, uri or opaque (RFC 9493)' });

export const addSubjectSchema = z.object({ stream_id: streamIdSchema, subject, verified: z.boolean().optional() }).strict();
export const removeSubjectSchema = z.object({ stream_id: streamIdSchema, subject }).strict();
export const verifySchema = z.object({ stream_id: streamIdSchema, state: text(1000).optional() }).strict();

export const pollSchema = z.object({
  maxEvents: z.number().int().min(0).max(1000).optional(),
  returnImmediately: z.boolean().optional(),
  ack: z.array(text(256)).max(1000).optional(),
  setErrs: z.record(text(256), z.object({ err: text(100).min(1), description: text(1000).optional() }).strict()).optional(),
}).strict();

/** Parses against a schema; the first problem is a 400. */
export function parse<T>(schema: z.ZodType<T>, input: unknown): T {
  const r = schema.safeParse(input ?? {});
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const msg = issue.code === 'unrecognized_keys' ? `unknown member: ${issue.keys.join(', ')}` : `${issue.path.length ? `${issue.path.join('.')}: ` : ''}${issue.message}`;
    throw new StreamError(400, 'invalid_request', msg);
  }
  return r.data;
}

export type ParsedSubject = z.infer<typeof subject> & SubjectId;

/** What a receiver sees of an authorization header it gave: its scheme only, never the secret. */
export function maskAuthorization(value: string): string {
  const space = value.indexOf(' ');
  return space > 0 ? `${value.slice(0, space)} ****` : '****';
}

/**
 * The stream configuration as SSF shows it (`authorization` is the stream's authorization header in clear;
 * `minVerificationInterval` in seconds, 0 for none).
 */
export function streamView(s: StreamRecord, authorization: string | null, issuer: string, pollUrl: (id: string) => string, minVerificationInterval = 0): Record<string, unknown> {
  return {
    stream_id: s.stream_id,
    iss: issuer,
    aud: s.aud,
    delivery: {
      method: s.delivery_method,
      endpoint_url: s.delivery_method === POLL_METHOD ? pollUrl(s.stream_id) : s.endpoint_url,
      ...(authorization ? { authorization_header: maskAuthorization(authorization) } : {}),
    },
    events_supported: EVENTS_SUPPORTED,
    events_requested: s.events_requested,
    events_delivered: REQUESTABLE_EVENTS.filter((t) => s.events_requested.includes(t)),
    ...(minVerificationInterval > 0 ? { min_verification_interval: minVerificationInterval } : {}),
    ...(s.description ? { description: s.description } : {}),
  };
}
