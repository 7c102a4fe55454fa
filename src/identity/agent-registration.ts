import { importJWK, type JWK } from 'jose';
import { z } from 'zod';
import type { AgentChanges, NewAgent, TokenEndpointAuthMethod } from '../storage/agents-repo.js';
import { parseWorkloadId } from './workload-id.js';
import { AGENT_CHECKSUM_PATTERN } from './agent-checksum.js';

export class RegistrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegistrationError';
  }
}

/** Authentication methods an agent can register with in this version. */
export const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'wit'] as const satisfies readonly TokenEndpointAuthMethod[];
export const SECRET_METHODS: ReadonlySet<string> = new Set(['client_secret_basic', 'client_secret_post']);
export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const CIBA_GRANT_TYPE = 'urn:openid:params:grant-type:ciba';
export const GRANT_TYPES = ['client_credentials', TOKEN_EXCHANGE_GRANT, JWT_BEARER_GRANT, CIBA_GRANT_TYPE] as const;
/** Subject token types an agent may be allowed to exchange. */
export const SUBJECT_TOKEN_TYPES = [
  'urn:ietf:params:oauth:token-type:access_token',
  'urn:ietf:params:oauth:token-type:txn_token',
  'urn:ietf:params:oauth:token-type:jwt',
  'urn:ietf:params:oauth:token-type:id_token',
  'urn:agent-sts:params:oauth:token-type:biscuit',
  'urn:ietf:params:oauth:token-type:self_signed',
] as const;

// RFC 6749 §3.3 scope-token.
export const scopeToken = z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/, 'each scope must be 1-128 printable characters without spaces, quotes or backslashes');
const AUDIENCE_SCHEMES = new Set(['https:', 'http:', 'urn:', 'spiffe:', 'wimse:']);
const audience = z.string().max(2048).refine((v) => {
  const u = URL.parse(v);
  return !!u && AUDIENCE_SCHEMES.has(u.protocol) && !v.includes('#');
}, 'each audience must be an absolute https, http, urn, spiffe or wimse URI without a fragment');
const checksum = z.string().regex(AGENT_CHECKSUM_PATTERN, 'each agent checksum must be a base64url SHA-256 (43 characters)');
const claimValue = z.union([z.string().max(1024), z.number(), z.boolean()]);
const attestor = z.discriminatedUnion('type', [
  z.object({ type: z.literal('join_token') }).strict(),
  z.object({ type: z.literal('wit') }).strict(),
  z.object({
    type: z.literal('jwt'),
    issuer: z.string().min(1).max(2048),
    claims: z.record(z.string().min(1).max(128), claimValue).refine((c) => Object.keys(c).length > 0, 'name at least one claim that must match, such as sub'),
  }).strict(),
], { error: 'each attestor must be {"type": "join_token"}, {"type": "wit"} or {"type": "jwt", "issuer": ..., "claims": {...}}' });
const jwk = z.object({ kty: z.enum(['OKP', 'EC', 'RSA'], { error: 'each key must have kty OKP, EC or RSA' }) }).passthrough();
const jwks = z.object({ keys: z.array(jwk).min(1, 'jwks.keys must hold at least one key').max(10, 'jwks.keys may hold at most 10 keys') }).strict();

const unique = <T extends z.ZodTypeAny>(item: T, max: number) => z.array(item).max(max).refine((a) => new Set(a).size === a.length, 'must not repeat values');

function mutableFields(maxDepth: number) {
  return {
    scopes: unique(scopeToken, 100),
    audiences: unique(audience, 50),
    jwks,
    grant_types: unique(z.enum(GRANT_TYPES, { error: `each grant type must be one of ${GRANT_TYPES.join(', ')}` }), 5).min(1, 'must name at least one grant type'),
    dpop_bound_access_tokens: z.boolean(),
    max_delegation_depth: z.number().int().min(0).max(maxDepth, `must be at most the server's MAX_DELEGATION_DEPTH (${maxDepth})`),
    agent_checksums: unique(checksum, 50),
    token_exchange: z.object({
      subject_token_types: unique(z.enum(SUBJECT_TOKEN_TYPES, { error: `each subject token type must be one of ${SUBJECT_TOKEN_TYPES.join(', ')}` }), 10),
      subject_issuers: unique(z.string().min(1).max(2048), 20),
      may_act_for_others: z.boolean(),
      max_budget: z.number().int().min(0).max(1e15),
    }).partial().strict(),
    ssf: z.object({
      resources: unique(audience, 50),
      follows: unique(z.string().max(2048).refine((v) => typeof parseWorkloadId(v) !== 'string', 'each followed agent must be a SPIFFE id'), 50),
      all_subjects: z.boolean(),
    }).partial().strict(),
    attestors: z.array(attestor).max(10).refine((a) => new Set(a.map((x) => (x.type === 'jwt' ? `jwt ${x.issuer}` : x.type))).size === a.length, 'must not repeat an attestor'),
  };
}

/** PostgreSQL can't store U+0000 in text or jsonb: no registration field may hold one, in any string or key. */
export function checkNoNul(input: unknown): void {
  const pending = [input];
  while (pending.length) {
    const v = pending.pop();
    if (typeof v === 'string' ? v.includes('\u0000') : false) throw new RegistrationError('strings must not contain NUL (U+0000) characters');
    if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k.includes('\u0000')) throw new RegistrationError('strings must not contain NUL (U+0000) characters');
        pending.push(x);
      }
    }
  }
}

function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0]!;
  if (issue.code === 'unrecognized_keys') return `unknown field${issue.keys.length > 1 ? 's' : ''}: ${issue.keys.join(', ')}`;
  const path = issue.path.join('.');
  return path ? `${path}: ${issue.message}` : issue.message;
}

async function checkPublicKeys(set: { keys: Record<string, unknown>[] }): Promise<void> {
  for (const [i, key] of set.keys.entries()) {
    if ('d' in key || 'p' in key || 'k' in key) throw new RegistrationError(`jwks.keys.${i}: must be a public key (private key material was sent)`);
    if (key.kty === 'RSA' && (typeof key.n !== 'string' || Buffer.from(key.n, 'base64url').length * 8 < 2048)) {
      throw new RegistrationError(`jwks.keys.${i}: RSA keys must be at least 2048 bits`);
    }
    try {
      await importJWK(key as JWK, typeof key.alg === 'string' ? key.alg : key.kty === 'OKP' ? 'EdDSA' : key.kty === 'EC' ? 'ES256' : 'RS256');
    } catch (err) {
      throw new RegistrationError(`jwks.keys.${i}: not a usable public key (${(err as Error).message})`);
    }
  }
}

export interface RegistrationLimits {
  trustDomain: string;
  maxDelegationDepth: number;
  /** `iss` values of the configured trusted attestation issuers. */
  trustedIssuers: readonly string[];
}

function checkExchangePolicy(policy: { subject_issuers?: string[] } | undefined, limits: RegistrationLimits): void {
  for (const [i, iss] of (policy?.subject_issuers ?? []).entries()) {
    if (!limits.trustedIssuers.includes(iss)) throw new RegistrationError(`token_exchange.subject_issuers.${i}: ${JSON.stringify(iss)} is not a trusted issuer (TRUSTED_ISSUERS)`);
  }
}

function checkAttestors(attestors: { type: string; issuer?: unknown }[] | undefined, limits: RegistrationLimits): void {
  for (const [i, a] of (attestors ?? []).entries()) {
    if (a.type === 'jwt' && !limits.trustedIssuers.includes(a.issuer as string)) {
      throw new RegistrationError(`attestors.${i}.issuer: ${JSON.stringify(a.issuer)} is not a trusted issuer (TRUSTED_ISSUERS)`);
    }
  }
}

/** Validates an agent registration from the admin API. The client secret hash is filled in by the caller. */
export async function validateNewAgent(input: unknown, limits: RegistrationLimits): Promise<Omit<NewAgent, 'client_secret_hash'>> {
  const fields = mutableFields(limits.maxDelegationDepth);
  const schema = z.object({
    id: z.string({ error: 'id is required' }),
    token_endpoint_auth_method: z.enum(AUTH_METHODS, { error: `must be one of ${AUTH_METHODS.join(', ')}` }).default('client_secret_basic'),
    scopes: fields.scopes.default([]),
    audiences: fields.audiences.default([]),
    jwks: fields.jwks.optional(),
    grant_types: fields.grant_types.default(['client_credentials']),
    dpop_bound_access_tokens: fields.dpop_bound_access_tokens.default(false),
    max_delegation_depth: fields.max_delegation_depth.default(Math.min(3, limits.maxDelegationDepth)),
    agent_checksums: fields.agent_checksums.default([]),
    attestors: fields.attestors.default([]),
    token_exchange: fields.token_exchange.default({}),
    ssf: fields.ssf.default({}),
  }).strict();
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw new RegistrationError(firstIssue(parsed.error));
  checkNoNul(parsed.data);
  const v = parsed.data;
  const id = parseWorkloadId(v.id);
  if (typeof id === 'string') throw new RegistrationError(`id: ${id}`);
  if (id.trustDomain !== limits.trustDomain) {
    throw new RegistrationError(`id: trust domain ${id.trustDomain} is not this server's (${limits.trustDomain}); agents of other trust domains are federated, not registered`);
  }
  if (v.token_endpoint_auth_method === 'private_key_jwt' && !v.jwks) throw new RegistrationError('jwks: required for private_key_jwt');
  if (v.jwks) await checkPublicKeys(v.jwks);
  checkAttestors(v.attestors, limits);
  checkExchangePolicy(v.token_exchange, limits);
  return { ...v, jwks: v.jwks ?? null };
}

/** Validates a PATCH of an agent: only the listed fields may change. */
export async function validateAgentChanges(input: unknown, authMethod: string, limits: RegistrationLimits): Promise<AgentChanges> {
  const fields = mutableFields(limits.maxDelegationDepth);
  const schema = z.object({ ...fields, jwks: fields.jwks.nullable() }).partial().strict();
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw new RegistrationError(firstIssue(parsed.error));
  checkNoNul(parsed.data);
  const v = parsed.data;
  if (Object.keys(v).length === 0) throw new RegistrationError('nothing to change: send at least one of scopes, audiences, jwks, grant_types, dpop_bound_access_tokens, max_delegation_depth, agent_checksums, attestors, token_exchange, ssf');
  if (v.jwks === null && authMethod === 'private_key_jwt') throw new RegistrationError('jwks: an agent using private_key_jwt needs keys');
  if (v.jwks) await checkPublicKeys(v.jwks);
  checkAttestors(v.attestors, limits);
  checkExchangePolicy(v.token_exchange, limits);
  return v;
}
