import type { KoaContextWithOIDC } from 'oidc-provider';
import { isDatabaseUnavailable } from '../storage/database-errors.js';

interface OutageState {
  databaseUnavailable?: boolean;
}

/** Called with the error behind an oidc-provider `server_error`: remembers whether the database was unreachable. */
export function noteServerError(ctx: KoaContextWithOIDC, err: unknown): boolean {
  const unavailable = isDatabaseUnavailable(err);
  if (unavailable) (ctx.state as OutageState).databaseUnavailable = true;
  return unavailable;
}

/** True when this request failed because the database could not be reached. */
export function failedOnDatabase(ctx: KoaContextWithOIDC): boolean {
  return (ctx.state as OutageState).databaseUnavailable === true;
}

export const DATABASE_UNAVAILABLE = { error: 'temporarily_unavailable', error_description: 'the database is unreachable; try again' } as const;

/**
 * oidc-provider answers any error from its storage (an agent lookup, a replay check) with `500 server_error`.
 * When that error was the database being unreachable, the answer is `503 temporarily_unavailable` with
 * `Retry-After`, as RFC 6749 §5.2 has it for a server that can't handle the request for now.
 */
export function databaseOutageMiddleware() {
  return async function answerDatabaseOutage(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    if (ctx.status !== 500 || !failedOnDatabase(ctx)) return;
    ctx.status = 503;
    ctx.set('Retry-After', '1');
    ctx.set('Cache-Control', 'no-store');
    ctx.type = 'json';
    ctx.body = { ...DATABASE_UNAVAILABLE };
  };
}
