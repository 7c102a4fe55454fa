/**
 * The grants agent-sts registers on its provider, with the same parameters, for the feature-matched baseline
 * (bench/baseline-provider.ts with FEATURES=agent-sts): client credentials again with the workflow parameters
 * (oidc-provider's own handler), token exchange and jwt-bearer with handlers that refuse.
 */
import type Provider from 'oidc-provider';
import { errors } from 'oidc-provider';
import * as builtin from 'oidc-provider/lib/actions/grants/client_credentials.js';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';
import { JWT_BEARER_GRANT, JWT_BEARER_PARAMS } from '../src/oauth/grants/jwt-bearer.js';
import { TOKEN_EXCHANGE_GRANT, TOKEN_EXCHANGE_PARAMS } from '../src/oauth/grants/token-exchange.js';
import { WORKFLOW_PARAMS } from '../src/policy/workflows.js';

export function registerExtraGrants(provider: Provider): void {
  const helpers = Object.fromEntries(Object.entries(grantHelpers).map(([name, helper]) => [name, helper.bind(undefined, provider)]));
  provider.registerGrantType('client_credentials', builtin.handler.bind(undefined, provider, helpers) as never, [...builtin.parameters, 'resource', ...WORKFLOW_PARAMS], ['resource']);
  const refuse = async () => {
    throw new errors.UnsupportedGrantType();
  };
  provider.registerGrantType(TOKEN_EXCHANGE_GRANT, refuse as never, TOKEN_EXCHANGE_PARAMS, ['resource', 'audience']);
  provider.registerGrantType(JWT_BEARER_GRANT, refuse as never, JWT_BEARER_PARAMS, ['resource', 'audience']);
}
