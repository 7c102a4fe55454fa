import { errors, type KoaContextWithOIDC } from 'oidc-provider';
import type { PartnerDomain } from '../../config/config.js';
import type { KeyManager, SigningAlg } from '../../keys/key-manager.js';
import type { ReplayRepo } from '../../storage/replay-repo.js';
import { ACCESS_TOKEN_TYPE, mintAccessToken } from '../../tokens/access-token.js';
import { TokenVerificationError } from '../../tokens/token-errors.js';
import { claimsTxnTokenTyp } from '../../tokens/txn-token.js';
import { claimedIssuer, EXTERNAL_CLOCK_TOLERANCE, type ExternalJwtVerifier } from '../../identity/trusted-issuers.js';
import { mapPartnerSubject } from '../../policy/subject-mapping.js';
import { chooseAudience, narrowExpiry, narrowScope, NarrowingError } from '../../policy/narrowing.js';
import type { AgentClientFields } from '../client-metadata.js';
import type { IssuanceContext } from '../token-records.js';
import { narrowingRefusal } from './exchange-request.js';
import { delegationDepth, MalformedActClaim, readActClaim } from '../../policy/act-chain.js';
import { senderBinding } from './sender-binding.js';

export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const JWT_BEARER_PARAMS = ['assertion', 'scope', 'resource', 'audience'];
/** Parameters a jwt-bearer request may repeat. */
export const JWT_BEARER_DUPES = ['resource', 'audience'];

export interface JwtBearerDeps {
  issuer: string;
  accessTokenTtl: number;
  signingAlg: SigningAlg;
  keys: KeyManager;
  partners: readonly PartnerDomain[];
  /** Verifies partner grants: the partners' keys, `aud` = our issuer or token endpoint. */
  partnerJwts: ExternalJwtVerifier;
  replay: ReplayRepo;
  /** MAX_DELEGATION_DEPTH: an assertion's actor chain counts against it. */
  maxDelegationDepth: number;
  now: () => number;
}

/**
 * RFC 7523 JWT bearer grant for identity chaining (draft-ietf-oauth-identity-chaining): a JWT
 * authorization grant from a configured partner domain, addressed to us and used once, whose subject maps
 * to a local one by the partner's rules; the authenticated agent gets an access token for that subject.
 */
export function jwtBearerHandler(deps: JwtBearerDeps) {
  return async function jwtBearer(ctx: KoaContextWithOIDC): Promise<void> {
    try {
      await redeemAssertion(ctx, deps);
    } catch (err) {
      throw err instanceof NarrowingError ? narrowingRefusal(err) : err;
    }
  };
}

async function redeemAssertion(ctx: KoaContextWithOIDC, deps: JwtBearerDeps): Promise<void> {
  const client = ctx.oidc.client as unknown as { clientId: string } & AgentClientFields;
  const params = ctx.oidc.params as Record<string, string | string[] | undefined>;
  const assertion = params.assertion;
  if (typeof assertion !== 'string' || !assertion) throw new errors.InvalidRequest('missing required parameter assertion');
  // A Txn-Token is no authorization grant (draft-ietf-oauth-transaction-tokens): never redeemed for an access token.
  if (claimsTxnTokenTyp(assertion)) throw new errors.InvalidRequest('a Txn-Token is not an authorization grant: it may only be replaced by a Txn-Token at token exchange');
  const iss = claimedIssuer(assertion);
  const partner = deps.partners.find((p) => p.issuer === iss);
  if (!partner) throw new errors.InvalidGrant('the assertion does not come from a configured partner domain');
  let claims: Record<string, unknown>;
  try {
    claims = await deps.partnerJwts.verify(assertion, partner.issuer, 'assertion', { requiredClaims: ['sub', 'jti'] });
  } catch (err) {
    if (err instanceof TokenVerificationError) throw new errors.InvalidGrant(err.message);
    throw err;
  }
  if (typeof claims.jti !== 'string' || !claims.jti) throw new errors.InvalidGrant('the assertion\'s jti must be a non-empty string');
  if (typeof claims.sub !== 'string') throw new errors.InvalidGrant('the assertion\'s sub must be a string');
  // Claimed for as long as the assertion verifies: its exp plus the clock tolerance.
  if (!(await deps.replay.claim(`jwt-bearer ${partner.issuer}`, claims.jti, (claims.exp as number) + EXTERNAL_CLOCK_TOLERANCE))) {
    throw new errors.InvalidGrant('the assertion was already used');
  }
  const local = mapPartnerSubject(partner, claims.sub);
  if (!local) throw new errors.InvalidGrant('the assertion\'s subject is not known here');

  // The assertion's actor chain stays with the token it is redeemed for, and counts against the depth limits.
  let act;
  try {
    act = readActClaim(claims.act, deps.maxDelegationDepth + 1);
  } catch (err) {
    if (err instanceof MalformedActClaim) throw new errors.InvalidGrant(`the assertion's ${err.message}`);
    throw err;
  }
  const depth = delegationDepth(act);
  const limit = Math.min(client.agent_max_delegation_depth ?? deps.maxDelegationDepth, deps.maxDelegationDepth);
  if (depth > limit) throw new errors.InvalidRequest(`delegation depth ${depth} exceeds the limit of ${limit}`);

  const held = typeof claims.scope === 'string' ? claims.scope : null;
  const scope = narrowScope(typeof params.scope === 'string' ? params.scope : undefined, held, client.agent_scopes ?? []);
  const audience = chooseAudience([params.resource, params.audience].flat().filter((v): v is string => typeof v === 'string'), client.agent_audiences ?? []);
  const { jkt, wit } = await senderBinding(ctx, client.clientId);
  const now = deps.now();
  const exp = narrowExpiry(now + deps.accessTokenTtl, claims.exp as number, now);
  const { token, record } = await mintAccessToken({
    issuer: deps.issuer, subject: local, clientId: client.clientId, audience, now, exp,
    signer: await deps.keys.signer(deps.signingAlg), parentJti: wit?.witJti ?? null, ...(scope ? { scope } : {}), ...(act ? { act } : {}),
    ...(jkt ? { jkt } : {}), ...(wit?.agentChecksum ? { agentChecksum: wit.agentChecksum } : {}),
  });
  (ctx.state as { issuance?: IssuanceContext }).issuance = { complete: record };
  ctx.body = { access_token: token, issued_token_type: ACCESS_TOKEN_TYPE, token_type: jkt ? 'DPoP' : 'Bearer', expires_in: exp - now, ...(scope ? { scope } : {}) };
}
