import type { KoaContextWithOIDC } from 'oidc-provider';
import { isDatabaseUnavailable } from '../storage/database-errors.js';
import { BiscuitTimeoutError } from '../tokens/biscuit-errors.js';

/**
 * Errors oidc-provider answers with `500 server_error` that are not the server's fault: its `server_error`
 * event notes the cause (`noteServerError`), and `serverErrorAnswers`, the innermost middleware around the
 * provider, answers such a request as what it is instead.
 */
export type ServerErrorCause = 'database_unavailable' | 'assertion_nested_too_deeply' | 'datalog_timeout';

interface CauseState {
  serverErrorCause?: ServerErrorCause;
}

/** A stack overflow: thrown by a structured clone or a recursive walk of JSON nested thousands of levels deep. */
const isStackOverflow = (err: unknown) => err instanceof RangeError && err.message === 'Maximum call stack size exceeded';

/** Called with the error behind an oidc-provider `server_error`: remembers and returns its cause, if it is one of ours. */
export function noteServerError(ctx: KoaContextWithOIDC, err: unknown): ServerErrorCause | undefined {
  let cause: ServerErrorCause | undefined;
  if (isDatabaseUnavailable(err)) cause = 'database_unavailable';
  // A Biscuit's Datalog ran past its time limit, a backstop a busy machine can exhaust: no refusal of the token.
  else if (err instanceof BiscuitTimeoutError) cause = 'datalog_timeout';
  // The provider structuredClone()s a client assertion's header and claims once its signature holds; JSON in
  // them nested deeply enough overflows the stack there. Only the holder of the client's key can send one.
  else if (isStackOverflow(err) && typeof (ctx.oidc?.params as { client_assertion?: unknown } | undefined)?.client_assertion === 'string') cause = 'assertion_nested_too_deeply';
  if (cause) (ctx.state as CauseState).serverErrorCause = cause;
  return cause;
}

/** True when this request failed because the database could not be reached. */
export function failedOnDatabase(ctx: KoaContextWithOIDC): boolean {
  return (ctx.state as CauseState).serverErrorCause === 'database_unavailable';
}

const DATABASE_UNAVAILABLE = { error: 'temporarily_unavailable', error_description: 'the database is unreachable; try again' } as const;
const DATALOG_TIMEOUT = { error: 'temporarily_unavailable', error_description: 'the server is too busy to evaluate the Biscuit now; try again' } as const;

/**
 * The answers to the causes above. A database that can't be reached: `503 temporarily_unavailable` with
 * `Retry-After`, as RFC 6749 §5.2 has it for a server that can't handle the request for now; so is a Biscuit
 * whose Datalog ran past its time limit (the token is not refused for the machine being busy). A client assertion
 * nested too deeply: `401 invalid_client`, as for any other unacceptable assertion (RFC 7523 §3.2).
 */
export function serverErrorAnswers() {
  return async function answerServerErrorCause(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    if (ctx.status !== 500) return;
    const cause = (ctx.state as CauseState).serverErrorCause;
    if (cause === 'database_unavailable' || cause === 'datalog_timeout') {
      ctx.status = 503;
      ctx.set('Retry-After', '1');
      ctx.body = { ...(cause === 'database_unavailable' ? DATABASE_UNAVAILABLE : DATALOG_TIMEOUT) };
    } else if (cause === 'assertion_nested_too_deeply') {
      ctx.status = 401;
      ctx.body = { error: 'invalid_client', error_description: 'the client assertion holds JSON nested too deeply' };
    } else {
      return;
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'json';
  };
}
