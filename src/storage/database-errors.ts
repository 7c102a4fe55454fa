/**
 * Errors meaning the database can't be reached right now (stopped, restarting, connection lost, pool
 * exhausted, not answering within the deadline), as opposed to a query that is wrong. A request failing this way can succeed if retried later,
 * so it is answered `503 temporarily_unavailable`, not `500`.
 */

/** Socket errors when connecting to or talking to the database server. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * PostgreSQL SQLSTATEs: class 08 (connection exception), 57P01 admin_shutdown, 57P02 crash_shutdown,
 * 57P03 cannot_connect_now (starting up, shutting down, recovering), 53300 too_many_connections.
 */
const SQLSTATES = /^(08...|57P0[123]|53300)$/;

/** node-postgres's messages for a connection that went away; they carry no code. */
const LOST_CONNECTION = /^(Connection terminated( unexpectedly)?|Client has encountered a connection error and is not queryable|Connection terminated due to connection timeout)$/;

export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const { name, code, message } = e as { name?: unknown; code?: unknown; message?: unknown };
    // No connection became free in time (knex's acquireConnectionTimeout), or no answer came within the deadline.
    if (name === 'KnexTimeoutError' || name === 'DatabaseTimeoutError') return true;
    if (typeof code === 'string' && (NETWORK_CODES.has(code) || SQLSTATES.test(code))) return true;
    // knex prefixes a failed query's message with the query: "select ... - Connection terminated unexpectedly".
    if (typeof message === 'string' && LOST_CONNECTION.test(message.replace(/^[\s\S]* - /, ''))) return true;
  }
  return false;
}
