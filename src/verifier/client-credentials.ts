/** An RFC 6749 §2.3.1 `client_secret_basic` Authorization value (id and secret form-encoded first). */
export function clientSecretBasic(clientId: string, clientSecret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`;
}

export interface ClientCredentialsOptions {
  /** The agent-sts issuer; its metadata names the token endpoint. */
  issuer: string;
  clientId: string;
  clientSecret: string;
  scope?: string;
  /** The RFC 8707 resource the token is for. */
  resource?: string;
  /** Refresh this long before `expires_in` runs out (default 30 s). */
  refreshMarginSeconds?: number;
  fetch?: typeof fetch;
}

/**
 * A source of access tokens for a resource server's own calls to agent-sts (stream management, say):
 * client credentials with `client_secret_basic`, kept until shortly before they expire. Concurrent
 * callers share one request.
 */
export function clientCredentialsTokens(opts: ClientCredentialsOptions): () => Promise<string> {
  const fetchFn = opts.fetch ?? fetch;
  const margin = (opts.refreshMarginSeconds ?? 30) * 1000;
  let current: { token: string; until: number } | undefined;
  let inflight: Promise<string> | undefined;
  let tokenEndpoint: string | undefined;

  const request = async (): Promise<string> => {
    if (!tokenEndpoint) {
      const res = await fetchFn(`${opts.issuer}/.well-known/oauth-authorization-server`, { headers: { accept: 'application/json' } });
      if (!res.ok) throw new Error(`authorization server metadata: HTTP ${res.status}`);
      const meta = (await res.json()) as { issuer?: string; token_endpoint?: string };
      if (meta.issuer !== opts.issuer) throw new Error(`authorization server metadata names another issuer: ${JSON.stringify(meta.issuer)}, expected ${JSON.stringify(opts.issuer)}`);
      if (!meta.token_endpoint) throw new Error('authorization server metadata has no token_endpoint');
      tokenEndpoint = meta.token_endpoint;
    }
    const form = new URLSearchParams({ grant_type: 'client_credentials', ...(opts.scope ? { scope: opts.scope } : {}), ...(opts.resource ? { resource: opts.resource } : {}) });
    const res = await fetchFn(tokenEndpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded', accept: 'application/json',
        authorization: clientSecretBasic(opts.clientId, opts.clientSecret),
      },
      body: form.toString(),
    });
    const body = (await res.json().catch(() => ({}))) as { access_token?: string; expires_in?: number; error?: string; error_description?: string };
    if (!res.ok || typeof body.access_token !== 'string') {
      throw new Error(`token request refused: ${body.error ?? `HTTP ${res.status}`}${body.error_description ? `: ${body.error_description}` : ''}`);
    }
    const lifetimeMs = (typeof body.expires_in === 'number' ? body.expires_in : 60) * 1000;
    current = { token: body.access_token, until: Date.now() + Math.max(lifetimeMs - margin, lifetimeMs / 2) };
    return body.access_token;
  };

  return () => {
    if (current && current.until > Date.now()) return Promise.resolve(current.token);
    inflight ??= request().finally(() => {
      inflight = undefined;
    });
    return inflight;
  };
}
