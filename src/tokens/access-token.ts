import { randomId } from './random-id.js';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { signJwt, type Signer } from './our-jwt.js';
import type { NewTokenRecord } from '../storage/tokens-repo.js';
import { tokenHash } from './token-hash.js';

export const ACCESS_TOKEN_TYP = 'at+jwt';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

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
  intent?: Intent;
}

/** The `intent` claim of a token issued for a workflow step (docs/wire-formats.md §9). */
export interface Intent {
  workflow_id: string;
  workflow_version: number;
  workflow_step: string;
  executed_by: string;
  /** For a step that needs human approval: who approved it (an approver id, or `admin`) and when. */
  approved_by?: string;
  approved_at?: number;
}

/** Reads the header and claims of a compact JWT this server signed; undefined when it is not a JWT. */
export function readJwt(token: string): { header: { typ?: string; kid?: string; alg?: string }; claims: Record<string, unknown> } | undefined {
  try {
    return { header: decodeProtectedHeader(token) as { typ?: string; kid?: string }, claims: decodeJwt(token) };
  } catch {
    return undefined;
  }
}

/** Headers of tokens just issued, by their encoded form: one per signing key, so decoded once per key. */
const issuedHeaders = new Map<string, { typ?: string; kid?: string }>();
function issuedHeader(token: string): { typ?: string; kid?: string } {
  const encoded = token.slice(0, token.indexOf('.'));
  let header = issuedHeaders.get(encoded);
  if (!header) {
    header = decodeProtectedHeader(token) as { typ?: string; kid?: string };
    if (issuedHeaders.size >= 16) issuedHeaders.clear();
    issuedHeaders.set(encoded, header);
  }
  return header;
}

/**
 * The record of an RFC 9068 access token the server has just issued; `claims`, when the issuer handed over
 * the claims it signed, spares decoding them again (only the header is read).
 */
export function accessTokenRecord(token: string, extra: Partial<Pick<NewTokenRecord, 'parent_jti' | 'actor' | 'txn'>> = {}, claims?: Record<string, unknown>): NewTokenRecord {
  let header: { typ?: string; kid?: string };
  let payload: Record<string, unknown>;
  try {
    header = issuedHeader(token);
    payload = claims ?? decodeJwt(token);
  } catch {
    throw new Error('not an access token JWT');
  }
  if (header.typ !== ACCESS_TOKEN_TYP) throw new Error('not an access token JWT');
  return recordOf(token, payload as unknown as AccessTokenClaims, header.kid ?? null, extra);
}

function recordOf(token: string, c: AccessTokenClaims, kid: string | null, extra: Partial<Pick<NewTokenRecord, 'parent_jti' | 'actor' | 'txn'>>): NewTokenRecord {
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
    kid,
    iat: c.iat,
    exp: c.exp,
    token_hash: tokenHash(token),
    cnf_jkt: c.cnf?.jkt ?? null,
    ...(c.intent ? { workflow_id: c.intent.workflow_id, workflow_version: c.intent.workflow_version, workflow_step: c.intent.workflow_step } : {}),
  };
}

/** An RFC 8693 `act` claim: the current actor outermost, the one before it nested inside. */
export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

/**
 * Mints an RFC 9068 access token from a token exchange (docs/wire-formats.md §4, §5): `sub` of the subject,
 * `client_id` of the requester, `act` the actor chain. Client-credentials tokens come from
 * oidc-provider with the same claims; {@link accessTokenRecord} records both.
 */
export async function mintAccessToken(opts: {
  issuer: string; subject: string; clientId: string; audience: string; scope?: string; now: number; exp: number;
  signer: Signer; act?: ActClaim; jkt?: string; txn?: string; agentChecksum?: string; intent?: Intent; parentJti: string | null;
}): Promise<{ token: string; record: NewTokenRecord }> {
  const claims: AccessTokenClaims & { agent_checksum?: string } = {
    iss: opts.issuer,
    sub: opts.subject,
    client_id: opts.clientId,
    aud: opts.audience,
    ...(opts.scope ? { scope: opts.scope } : {}),
    jti: randomId(24),
    iat: opts.now,
    exp: opts.exp,
    ...(opts.act ? { act: opts.act } : {}),
    ...(opts.jkt ? { cnf: { jkt: opts.jkt } } : {}),
    ...(opts.txn ? { txn: opts.txn } : {}),
    ...(opts.agentChecksum ? { agent_checksum: opts.agentChecksum } : {}),
    ...(opts.intent ? { intent: opts.intent } : {}),
  };
  const token = await signJwt(ACCESS_TOKEN_TYP, { ...claims }, opts.signer);
  return { token, record: recordOf(token, claims, opts.signer.kid, { parent_jti: opts.parentJti }) };
}
