import { describe, expect, it } from 'vitest';
import { isDatabaseUnavailable } from '../../src/storage/database-errors.js';

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('isDatabaseUnavailable', () => {
  it('recognises a database that is stopped, restarting or unreachable', () => {
    for (const err of [
      withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'),
      withCode('read ECONNRESET', 'ECONNRESET'),
      withCode('the database system is not yet accepting connections', '57P03'),
      withCode('the database system is shutting down', '57P03'),
      withCode('terminating connection due to administrator command', '57P01'),
      withCode('terminating connection because of crash of another server process', '57P02'),
      withCode('connection failure', '08006'),
      withCode('sorry, too many clients already', '53300'),
      new Error('Connection terminated unexpectedly'),
      new Error('select * from "agents" where "id" = $1 - Connection terminated unexpectedly'),
      new Error('Client has encountered a connection error and is not queryable'),
      Object.assign(new Error('Knex: Timeout acquiring a connection. The pool is probably full.'), { name: 'KnexTimeoutError' }),
      Object.assign(new Error('the database did not answer within 3000 ms'), { name: 'DatabaseTimeoutError' }),
      new Error('request failed', { cause: withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED') }),
    ]) {
      expect(isDatabaseUnavailable(err), err.message).toBe(true);
    }
  });

  it('leaves every other error alone', () => {
    for (const err of [
      new Error('internal error'),
      withCode('duplicate key value violates unique constraint "issued_tokens_pkey"', '23505'),
      withCode('relation "issued_tokens" does not exist', '42P01'),
      withCode('syntax error at or near "selec"', '42601'),
      withCode('canceling statement due to statement timeout', '57014'),
      new Error('insert into "issued_tokens" - value too long for type character varying(255)'),
      new Error('Connection terminated unexpectedly, or so the caller says'),
      undefined,
      null,
      'ECONNREFUSED',
    ]) {
      expect(isDatabaseUnavailable(err), String(err)).toBe(false);
    }
  });
});
