import type { KoaContextWithOIDC } from 'oidc-provider';
import { AGENT_KEY_ALGS } from '../tokens/wit.js';

/** The registered name (draft-ietf-oauth-attestation-based-client-auth) of WIT client authentication. */
export const ATTEST_JWT_CLIENT_AUTH = 'attest_jwt_client_auth';
/** The algorithms this server signs WITs with (`SIGNING_ALG`). */
const WIT_SIGNING_ALGS = ['EdDSA', 'ES256'] as const;

/** Metadata fields that describe OpenID Connect end-user flows this server does not offer. */
const NOT_OFFERED = [
  'authorization_endpoint', 'userinfo_endpoint', 'end_session_endpoint', 'registration_endpoint',
  'claims_parameter_supported', 'claims_supported', 'claim_types_supported', 'subject_types_supported',
  'id_token_signing_alg_values_supported', 'request_parameter_supported', 'request_uri_parameter_supported',
  'require_request_uri_registration', 'response_modes_supported', 'scopes_supported',
  'code_challenge_methods_supported', 'authorization_response_iss_parameter_supported',
  'pushed_authorization_request_endpoint', 'require_pushed_authorization_requests',
  'backchannel_logout_supported', 'backchannel_logout_session_supported',
  'frontchannel_logout_supported', 'frontchannel_logout_session_supported',
];

/**
 * Trims the provider's discovery document to what works here (RFC 8414): client credentials,
 * introspection, revocation, DPoP, resource indicators; no end-user flows.
 */
export function discoveryMiddleware(extra: () => Record<string, unknown>) {
  return async function trimDiscovery(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    if (ctx.oidc?.route !== 'discovery' || ctx.status !== 200) return;
    const body = { ...(ctx.body as Record<string, unknown>) };
    for (const field of NOT_OFFERED) delete body[field];
    body.response_types_supported = [];
    // CIBA Core §4: the provider always says true, but verifyUserCode (ciba.ts) refuses any user_code.
    if ('backchannel_user_code_parameter_supported' in body) body.backchannel_user_code_parameter_supported = false;
    // `none` is how WIT authentication looks to oidc-provider (wit-client-auth.ts); a client discovers it by its
    // registered name, attest_jwt_client_auth: the WIT as the Client Attestation, with a Client Attestation PoP JWT.
    let witAuth = false;
    for (const field of ['token_endpoint_auth_methods_supported', 'introspection_endpoint_auth_methods_supported', 'revocation_endpoint_auth_methods_supported']) {
      if (!Array.isArray(body[field])) continue;
      witAuth ||= (body[field] as string[]).includes('none');
      body[field] = (body[field] as string[]).map((m) => (m === 'none' ? ATTEST_JWT_CLIENT_AUTH : m));
    }
    if (witAuth) {
      // WITs are signed by this server's keys; their PoPs by the workload's key.
      body.client_attestation_signing_alg_values_supported = [...WIT_SIGNING_ALGS];
      body.client_attestation_pop_signing_alg_values_supported = [...AGENT_KEY_ALGS];
    }
    Object.assign(body, extra());
    ctx.body = body;
  };
}
