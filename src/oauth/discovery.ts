import type { KoaContextWithOIDC } from 'oidc-provider';

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
    // `none` is how WIT + WPT authentication looks to oidc-provider; we publish it as `wit`.
    for (const field of ['token_endpoint_auth_methods_supported', 'introspection_endpoint_auth_methods_supported', 'revocation_endpoint_auth_methods_supported']) {
      if (Array.isArray(body[field])) body[field] = (body[field] as string[]).map((m) => (m === 'none' ? 'wit' : m));
    }
    Object.assign(body, extra());
    ctx.body = body;
  };
}
