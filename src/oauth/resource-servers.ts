import { errors, type KoaContextWithOIDC, type ResourceServer } from 'oidc-provider';
import type { AgentClientFields } from './client-metadata.js';

interface ClientLike extends AgentClientFields {
  clientId: string;
}

/** The resource used when a token request names none: the agent's first registered audience. */
export function defaultResourceFor(client: ClientLike | undefined): string {
  const first = client?.agent_audiences?.[0];
  if (!first) throw new errors.InvalidTarget('resource is required: this agent has no registered audience');
  return first;
}

/**
 * What a JWT access token for `resource` may carry: the resource must be one of the agent's registered
 * audiences, and every requested scope one of its allowed scopes. When no scope is asked for, the
 * token carries all of the agent's allowed scopes.
 */
export function resourceServerFor(
  ctx: KoaContextWithOIDC,
  resource: string,
  client: ClientLike,
  opts: { accessTokenTtl: number; signingAlg: string },
): ResourceServer {
  if (!client.agent_audiences?.includes(resource)) {
    throw new errors.InvalidTarget(`resource ${JSON.stringify(resource)} is not a registered audience of this agent`);
  }
  const allowed = new Set(client.agent_scopes ?? []);
  const params = ctx.oidc.params as { scope?: string } | undefined;
  if (params && ctx.oidc.route === 'token') {
    if (params.scope) {
      const refused = params.scope.split(' ').filter((s) => s && !allowed.has(s));
      if (refused.length) throw new errors.InvalidScope(`scope not allowed for this agent: ${refused.join(' ')}`, refused.join(' '));
    } else if (allowed.size) {
      params.scope = [...allowed].join(' ');
    }
  }
  return {
    scope: [...allowed].join(' '),
    audience: resource,
    accessTokenTTL: opts.accessTokenTtl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: opts.signingAlg as 'EdDSA' } },
  };
}
