import { decodeJwt, decodeProtectedHeader } from 'jose';
import type { NewTokenRecord } from '../storage/tokens-repo.js';
import { tokenHash } from './token-hash.js';

export const ACCESS_TOKEN_TYP = 'at+jwt';

export interface AccessTokenClaims {
  iss: string;
  sub: string;
  client_id: string;
  aud: string | string[];
  scope?: string;
  jti: string;
  iat: number;
  exp: number;
  cnf?: { jkt?: string };
  act?: unknown;
  txn?: string;
}

/** Reads the header and claims of a compact JWT this server signed; undefined when it is not a JWT. */
export function readJwt(token: string): { header: { typ?: string; kid?: string; alg?: string }; claims: Record<string, unknown> } | undefined {
  try {
    return { header: decodeProtectedHeader(token) as { typ?: string; kid?: string }, claims: decodeJwt(token) };
  } catch {
    return undefined;
  }
}

/** The record of an RFC 9068 access token the server has just issued. */
export function accessTokenRecord(token: string, extra: Partial<Pick<NewTokenRecord, 'parent_jti' | 'actor' | 'txn'>> = {}): NewTokenRecord {
  const jwt = readJwt(token);
  if (!jwt || jwt.header.typ !== ACCESS_TOKEN_TYP) throw new Error('not an access token JWT');
  const c = jwt.claims as unknown as AccessTokenClaims;
  return {
    jti: c.jti,
    type: 'access_token',
    sub: c.sub,
    client_id: c.client_id,
    actor: extra.actor ?? c.act ?? null,
    parent_jti: extra.parent_jti ?? null,
    txn: extra.txn ?? c.txn ?? null,
    scope: c.scope ?? null,
    audience: Array.isArray(c.aud) ? c.aud : [c.aud],
    kid: jwt.header.kid ?? null,
    iat: c.iat,
    exp: c.exp,
    token_hash: tokenHash(token),
    cnf_jkt: c.cnf?.jkt ?? null,
  };
}
