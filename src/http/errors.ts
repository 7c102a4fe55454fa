import type { Context, Next } from 'koa';
import type { Logger } from '../log/logger.js';
import { RegistrationError } from '../identity/agent-registration.js';
import { isDatabaseUnavailable } from '../storage/database-errors.js';
import { BiscuitTimeoutError } from '../tokens/biscuit-errors.js';

/** An error with its HTTP status and RFC 6749-style code, shown to the caller as JSON. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, description: string) {
    super(description);
    this.name = 'ApiError';
  }
}

export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} not found`);

/**
 * Maps every error thrown by our routes to `{error, error_description}`; never a stack trace, never a 500 for bad
 * input, and `503 temporarily_unavailable` when the database can't be reached or a Biscuit's evaluation ran out of time.
 */
export function errorMapper(logger: Logger) {
  return async function mapErrors(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
    } catch (err) {
      const e = err as Error & { status?: number; expose?: boolean };
      let status = 500;
      let code = 'server_error';
      let description = 'internal error';
      if (err instanceof ApiError) {
        ({ status, code } = err);
        description = err.message;
      } else if (err instanceof RegistrationError) {
        status = 400;
        code = 'invalid_request';
        description = err.message;
      } else if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
        status = e.status;
        code = status === 413 ? 'request_too_large' : status === 415 ? 'unsupported_media_type' : 'invalid_request';
        description = e.expose ? e.message : 'bad request';
      } else if (isDatabaseUnavailable(err)) {
        // The database is stopped, restarting or unreachable: a retry can succeed.
        status = 503;
        code = 'temporarily_unavailable';
        description = 'the database is unreachable; try again';
        ctx.set('Retry-After', '1');
        logger.warn({ err: { name: e.name, message: e.message }, path: ctx.path }, 'database unreachable; answered 503');
      } else if (err instanceof BiscuitTimeoutError) {
        // A Biscuit's Datalog ran past its time limit on a busy machine: not the token's fault, a retry can succeed.
        status = 503;
        code = 'temporarily_unavailable';
        description = 'the server is too busy to evaluate the Biscuit now; try again';
        ctx.set('Retry-After', '1');
        logger.warn({ err: { name: e.name, message: e.message }, path: ctx.path }, 'Biscuit evaluation ran past its time limit; answered 503');
      } else {
        logger.error({ err: { name: e.name, message: e.message, stack: e.stack }, path: ctx.path }, 'unhandled error');
      }
      ctx.status = status;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: code, error_description: description };
    }
  };
}
