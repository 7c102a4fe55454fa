import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SecurityEventError } from './errors.js';
import { RECEIVED_EVENTS, type SecurityEvent } from './security-signals.js';
import type { Verifier } from './verifier.js';

export const PUSH_DELIVERY = 'urn:ietf:rfc:8935';
export const POLL_DELIVERY = 'urn:ietf:rfc:8936';

/** The transmitter's stream as it describes it (OpenID SSF 1.0 §8.1.1). */
export interface StreamConfiguration {
  stream_id: string;
  iss?: string;
  aud?: string | string[];
  events_requested?: string[];
  events_delivered?: string[];
  delivery: { method: string; endpoint_url?: string };
  [member: string]: unknown;
}

export interface SsfReceiverOptions {
  /** The verifier that acts on the events: it refuses what they revoke. */
  verifier: Verifier;
  /**
   * An access token for the issuer's stream management (scope `ssf.manage`), or a function giving a fresh one.
   * Its client must be registered with `"ssf": {"resources": [<this verifier's audience>]}` for its stream to
   * carry the events about tokens for this resource.
   */
  accessToken: string | (() => Promise<string>);
  /**
   * Poll (RFC 8936): the receiver asks the transmitter for events in a long-poll loop.
   * Push (RFC 8935): the transmitter posts events to `endpointUrl`, served by `pushHandler()`.
   */
  delivery: { method: 'poll' } | { method: 'push'; endpointUrl: string };
  /** Event types to ask for (default: session-revoked, credential-change, token-claims-change). */
  events?: string[];
  description?: string;
  /** Called with every accepted event. */
  onEvent?: (event: SecurityEvent) => void;
  /** Called when a poll or an event fails; the receiver carries on. */
  onError?: (err: unknown) => void;
  /** Events asked for per poll (default 100). */
  maxEvents?: number;
  fetch?: typeof fetch;
}

/** Where a transmitter publishes its SSF metadata: `/.well-known/ssf-configuration` inserted before the issuer's path. */
export function ssfConfigurationUrl(issuer: string): string {
  const u = new URL(issuer);
  const path = u.pathname === '/' ? '' : u.pathname;
  return `${u.origin}/.well-known/ssf-configuration${path}`;
}

async function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new SecurityEventError('invalid_request', 'the event is too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Subscribes a Verifier to the issuer's Shared Signals stream, so tokens revoked at the issuer stop
 * working here within seconds rather than at their `exp`. `start()` discovers the transmitter and
 * creates a stream for this receiver; for poll delivery it then polls, acknowledging each event it
 * accepted (and reporting each it refused); for push delivery, mount `pushHandler()` at `endpointUrl`.
 */
export class SsfReceiver {
  private stream: StreamConfiguration | undefined;
  private configurationEndpoint: string | undefined;
  private readonly pushAuthorization = `Bearer ${randomBytes(32).toString('base64url')}`;
  private readonly fetchFn: typeof fetch;
  private polling: Promise<void> | undefined;
  private abort: AbortController | undefined;

  constructor(private readonly opts: SsfReceiverOptions) {
    this.fetchFn = opts.fetch ?? fetch;
  }

  get streamId(): string | undefined {
    return this.stream?.stream_id;
  }

  private async token(): Promise<string> {
    return typeof this.opts.accessToken === 'string' ? this.opts.accessToken : this.opts.accessToken();
  }

  private async call(url: string, init: { method: string; body?: unknown; signal?: AbortSignal }): Promise<Response> {
    const res = await this.fetchFn(url, {
      method: init.method,
      headers: { authorization: `Bearer ${await this.token()}`, accept: 'application/json', ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
      ...(init.signal ? { signal: init.signal } : {}),
    });
    if (!res.ok) {
      const detail = await res.text().catch(() => '');
      throw new Error(`${init.method} ${url}: HTTP ${res.status} ${detail.slice(0, 300)}`);
    }
    return res;
  }

  /** Discovers the transmitter, creates this receiver's stream and, for poll delivery, starts polling. */
  async start(): Promise<StreamConfiguration> {
    const issuer = this.opts.verifier.options.issuer;
    const metaRes = await this.fetchFn(ssfConfigurationUrl(issuer), { headers: { accept: 'application/json' } });
    if (!metaRes.ok) throw new Error(`SSF configuration: HTTP ${metaRes.status}`);
    const meta = (await metaRes.json()) as { issuer?: string; configuration_endpoint?: string; delivery_methods_supported?: string[] };
    if (meta.issuer !== issuer) throw new Error(`SSF configuration names another issuer: ${JSON.stringify(meta.issuer)}, expected ${JSON.stringify(issuer)}`);
    if (!meta.configuration_endpoint) throw new Error('SSF configuration has no configuration_endpoint');
    const method = this.opts.delivery.method === 'poll' ? POLL_DELIVERY : PUSH_DELIVERY;
    if (meta.delivery_methods_supported && !meta.delivery_methods_supported.includes(method)) throw new Error(`the transmitter does not deliver by ${method}`);
    this.configurationEndpoint = meta.configuration_endpoint;
    const delivery = this.opts.delivery.method === 'push'
      ? { method, endpoint_url: this.opts.delivery.endpointUrl, authorization_header: this.pushAuthorization }
      : { method };
    const res = await this.call(meta.configuration_endpoint, {
      method: 'POST',
      body: { delivery, events_requested: this.opts.events ?? RECEIVED_EVENTS, ...(this.opts.description ? { description: this.opts.description } : {}) },
    });
    const stream = (await res.json()) as StreamConfiguration;
    if (typeof stream.stream_id !== 'string') throw new Error('the transmitter returned a stream without stream_id');
    this.stream = stream;
    if (method === POLL_DELIVERY) {
      if (!stream.delivery?.endpoint_url) throw new Error('the transmitter returned a poll stream without endpoint_url');
      this.abort = new AbortController();
      this.polling = this.pollLoop(stream.delivery.endpoint_url, this.abort.signal);
    }
    return stream;
  }

  /** Stops polling and, unless `keepStream`, deletes the stream at the transmitter. */
  async stop(opts: { keepStream?: boolean } = {}): Promise<void> {
    this.abort?.abort();
    await this.polling;
    this.polling = undefined;
    if (this.stream && this.configurationEndpoint && !opts.keepStream) {
      const url = `${this.configurationEndpoint}?stream_id=${encodeURIComponent(this.stream.stream_id)}`;
      await this.call(url, { method: 'DELETE' }).catch((err) => this.opts.onError?.(err));
    }
    this.stream = undefined;
  }

  private async accept(set: string): Promise<SecurityEvent> {
    const event = await this.opts.verifier.acceptSecurityEvent(set, this.stream?.aud !== undefined ? { audience: this.stream.aud } : {});
    this.opts.onEvent?.(event);
    return event;
  }

  private async pollLoop(endpoint: string, signal: AbortSignal): Promise<void> {
    let ack: string[] = [];
    let setErrs: Record<string, { err: string; description: string }> = {};
    let backoffMs = 250;
    while (!signal.aborted) {
      try {
        const res = await this.call(endpoint, {
          method: 'POST', signal,
          body: { maxEvents: this.opts.maxEvents ?? 100, returnImmediately: false, ...(ack.length ? { ack } : {}), ...(Object.keys(setErrs).length ? { setErrs } : {}) },
        });
        ack = [];
        setErrs = {};
        const body = (await res.json()) as { sets?: Record<string, unknown> };
        for (const [jti, set] of Object.entries(body.sets ?? {})) {
          try {
            if (typeof set !== 'string') throw new SecurityEventError('invalid_request', 'the event is not a compact JWS');
            await this.accept(set);
            ack.push(jti);
          } catch (err) {
            if (!(err instanceof SecurityEventError)) throw err;
            setErrs[jti] = { err: err.code, description: err.message };
            this.opts.onError?.(err);
          }
        }
        backoffMs = 250;
      } catch (err) {
        if (signal.aborted) break;
        this.opts.onError?.(err);
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 30_000);
      }
    }
  }

  /**
   * The RFC 8935 push endpoint, as a node:http handler: checks the `Authorization` value this receiver
   * gave the transmitter, verifies and applies the event, answers `202`, or `400` with the RFC 8935 error.
   */
  pushHandler(): (req: IncomingMessage, res: ServerResponse) => void {
    const answer = (res: ServerResponse, status: number, body?: { err: string; description: string }) => {
      res.writeHead(status, body ? { 'content-type': 'application/json', 'cache-control': 'no-store' } : {});
      res.end(body ? JSON.stringify(body) : undefined);
    };
    return (req, res) => {
      void (async () => {
        try {
          if (req.method !== 'POST') return answer(res, 405);
          const given = Buffer.from(req.headers.authorization ?? '');
          const expected = Buffer.from(this.pushAuthorization);
          if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
            return answer(res, 401, { err: 'authentication_failed', description: 'the Authorization header is not the one this stream was given' });
          }
          if (!/^application\/secevent\+jwt\b/i.test(req.headers['content-type'] ?? '')) {
            return answer(res, 400, { err: 'invalid_request', description: 'the content type must be application/secevent+jwt' });
          }
          await this.accept((await readBody(req, 64 * 1024)).trim());
          answer(res, 202);
        } catch (err) {
          if (err instanceof SecurityEventError) return answer(res, 400, { err: err.code, description: err.message });
          // Not the event's fault (the issuer's keys could not be fetched, say): the transmitter retries.
          this.opts.onError?.(err);
          answer(res, 503);
        }
      })();
    };
  }
}
