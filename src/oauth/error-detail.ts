import type { KoaContextWithOIDC } from 'oidc-provider';

/**
 * oidc-provider answers many refusals with a generic description and keeps the reason in
 * `error_detail`. Callers get the reason, except for client authentication failures, where it
 * would tell an unauthenticated caller whether a client exists or which check failed.
 */
export function errorDetailMiddleware() {
  return async function exposeErrorDetail(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    // RFC 6749 §5.2: a grant type the client may not use is `unauthorized_client` (oidc-provider says invalid_request).
    const refusal = ctx.body as { error?: string; error_description?: string } | undefined;
    if (ctx.oidc?.route === 'token' && refusal?.error === 'invalid_request' && refusal.error_description === 'requested grant type is not allowed for this client') {
      ctx.body = { ...refusal, error: 'unauthorized_client' };
    }
    const detail = (ctx.state as { refusalDetail?: string }).refusalDetail;
    const body = ctx.body as { error?: string; error_description?: string } | undefined;
    if (!detail || ctx.status < 400 || ctx.status >= 500 || !body?.error || body.error === 'invalid_client') return;
    ctx.body = { ...body, error_description: detail };
  };
}
