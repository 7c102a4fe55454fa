import { importJWK, type JWK } from 'jose';
import { z } from 'zod';
import type { KeyManager, SigningAlg } from '../keys/key-manager.js';
import type { AgentsRepo } from '../storage/agents-repo.js';
import type { TokensRepo } from '../storage/tokens-repo.js';
import { AGENT_KEY_ALGS, mintWit } from '../tokens/wit.js';
import { AttestationError, type AttestationEvidence, type Attestor } from './attestors/attestor.js';
import { AGENT_CHECKSUM_PATTERN } from './agent-checksum.js';
import { claimedIssuer } from './trusted-issuers.js';

/** A WIT request refused: `code` is the OAuth-style error, `message` is safe to show. */
export class WitRequestError extends Error {
  /** The agent, when the refusal came after its attestation succeeded. */
  attested?: string;

  constructor(readonly code: 'invalid_request' | 'invalid_grant' | 'unauthorized_client', message: string, readonly status = 400) {
    super(message);
    this.name = 'WitRequestError';
  }
}

/** Thrown when the WIT could not be recorded: nothing is issued. */
export class WitNotRecordedError extends Error {}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];
const KEY_SHAPES: Record<string, { kty: string; crv: string }> = { EdDSA: { kty: 'OKP', crv: 'Ed25519' }, ES256: { kty: 'EC', crv: 'P-256' } };

const request = z.object({
  agent_id: z.string({ error: 'agent_id is required' }).min(1).max(2048),
  jwk: z.record(z.string(), z.unknown(), { error: 'jwk (the agent\'s public key) is required' }),
  attestation: z.object({
    type: z.string({ error: 'attestation.type is required' }).min(1).max(64),
    token: z.string().min(1).max(16_384).optional(),
  }, { error: 'attestation is required' }).strict(),
  agent_checksum: z.string().regex(AGENT_CHECKSUM_PATTERN, 'agent_checksum must be a base64url SHA-256 (43 characters)').optional(),
}).strict();

async function checkAgentKey(jwk: Record<string, unknown>): Promise<JWK> {
  const secret = PRIVATE_MEMBERS.filter((m) => m in jwk);
  if (secret.length) throw new WitRequestError('invalid_request', `jwk must be a public key: it holds private key material (${secret.join(', ')}); the private key never leaves the agent`);
  const alg = jwk.alg;
  if (typeof alg !== 'string' || !AGENT_KEY_ALGS.includes(alg as (typeof AGENT_KEY_ALGS)[number])) {
    throw new WitRequestError('invalid_request', `jwk.alg must be one of ${AGENT_KEY_ALGS.join(', ')}`);
  }
  const shape = KEY_SHAPES[alg]!;
  if (jwk.kty !== shape.kty || jwk.crv !== shape.crv) throw new WitRequestError('invalid_request', `a ${alg} jwk must have kty ${shape.kty} and crv ${shape.crv}`);
  try {
    await importJWK(jwk as JWK, alg);
  } catch {
    throw new WitRequestError('invalid_request', 'jwk is not a usable public key');
  }
  return jwk as JWK;
}

/** Issues Workload Identity Tokens after attestation (docs/wire-formats.md §2). */
export class WitIssuer {
  constructor(private readonly deps: {
    issuer: string; ttl: number; signingAlg: SigningAlg; keys: KeyManager; agents: AgentsRepo; tokens: TokensRepo;
    attestors: Map<string, Attestor>; now: () => number;
  }) {}

  async issue(body: unknown, headers: Pick<AttestationEvidence, 'wit' | 'wpt'>): Promise<{ wit: string; expires_in: number; jti: string; agent_id: string; detail: string }> {
    const parsed = request.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const msg = issue.code === 'unrecognized_keys' ? `unknown field: ${issue.keys.join(', ')}` : `${issue.path.join('.') ? `${issue.path.join('.')}: ` : ''}${issue.message}`;
      throw new WitRequestError('invalid_request', msg);
    }
    const req = parsed.data;
    const jwk = await checkAgentKey(req.jwk);
    const agent = await this.deps.agents.find(req.agent_id);
    if (agent?.status !== 'active') throw new WitRequestError('invalid_grant', 'no active agent is registered with this agent_id');

    if (req.attestation.type === 'jwt' && !claimedIssuer(req.attestation.token)) throw new WitRequestError('invalid_request', 'attestation.token must be a JWT with an iss claim');
    const attestor = this.deps.attestors.get(req.attestation.type);
    const config = agent.attestors.find((a) => a.type === req.attestation.type && (a.type !== 'jwt' || a.issuer === claimedIssuer(req.attestation.token)));
    if (!attestor || !config) {
      throw new WitRequestError('unauthorized_client', `this agent does not accept ${req.attestation.type} attestation${req.attestation.type === 'jwt' ? ' from this issuer' : ''}`);
    }
    let result;
    try {
      result = await attestor.attest(agent, config, { attestation: req.attestation, ...headers });
    } catch (err) {
      if (err instanceof AttestationError) throw new WitRequestError('invalid_grant', err.message);
      throw err;
    }

    const attested = (code: WitRequestError['code'], message: string) => Object.assign(new WitRequestError(code, message), { attested: agent.id });
    const checksum = req.agent_checksum ?? result.agentChecksum;
    if (checksum && !agent.agent_checksums.includes(checksum)) throw attested('invalid_grant', 'agent_checksum is not one this agent registered');
    if (!checksum && agent.agent_checksums.length) throw attested('invalid_request', 'agent_checksum is required: this agent registered the checksums it may run as');

    const now = this.deps.now();
    const { token, record } = await mintWit({
      issuer: this.deps.issuer, subject: agent.id, agentJwk: jwk, ttl: this.deps.ttl, now,
      signer: await this.deps.keys.signer(this.deps.signingAlg), ...(checksum ? { agentChecksum: checksum } : {}),
      ...(result.renews ? { parentJti: result.renews } : {}),
    });
    let recorded = true;
    try {
      // A renewal is recorded only while the WIT it renews is good (a revocation racing it revokes both or refuses this).
      if (result.renews) recorded = await this.deps.tokens.insertUnder(record, { jti: result.renews });
      else await this.deps.tokens.insert(record);
    } catch {
      throw new WitNotRecordedError('the WIT could not be recorded');
    }
    if (!recorded) throw attested('invalid_grant', 'the WIT being renewed has been revoked, or its agent disabled');
    return { wit: token, expires_in: this.deps.ttl, jti: record.jti, agent_id: agent.id, detail: result.detail };
  }
}
