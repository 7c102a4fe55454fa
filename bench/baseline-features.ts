/**
 * What agent-sts's provider enables besides the plain baseline, for the feature-matched baseline
 * (bench/baseline-provider.ts with FEATURES=agent-sts): its client authentication methods, introspection,
 * revocation, DPoP, CIBA in poll mode, and its grants with their parameters (client credentials with
 * oidc-provider's own handler; token exchange and jwt-bearer with handlers that refuse). None of agent-sts's
 * code runs on a request. Loaded only in that mode, so the plain baseline doesn't carry agent-sts's modules.
 */
import type Provider from 'oidc-provider';
import { errors, type Configuration } from 'oidc-provider';
import { builtinClientCredentials, CLIENT_CREDENTIALS_DUPES, CLIENT_CREDENTIALS_PARAMS } from '../src/oauth/grants/client-credentials.js';
import { JWT_BEARER_DUPES, JWT_BEARER_GRANT, JWT_BEARER_PARAMS } from '../src/oauth/grants/jwt-bearer.js';
import { TOKEN_EXCHANGE_DUPES, TOKEN_EXCHANGE_GRANT, TOKEN_EXCHANGE_PARAMS } from '../src/oauth/grants/token-exchange.js';
import { CLIENT_ASSERTION_ALGS, CLIENT_AUTH_METHODS } from '../src/oauth/provider.js';
import { SIGNING_ALGS } from '../src/keys/key-manager.js';

const refuse = async () => {
  throw new errors.InvalidRequest('not offered by this baseline');
};

/** The plain baseline's `features` with agent-sts's added. */
export const withAgentStsFeatures = (features: Configuration['features']): Configuration['features'] => ({
  ...features,
  userinfo: { enabled: false },
  rpInitiatedLogout: { enabled: false },
  introspection: { enabled: true },
  revocation: { enabled: true },
  dPoP: { enabled: true },
  ciba: {
    enabled: true, deliveryModes: ['poll'], processLoginHint: refuse, processLoginHintToken: refuse, verifyUserCode: refuse,
    validateBindingMessage: refuse, validateRequestContext: refuse, triggerAuthenticationDevice: refuse,
  },
} as Configuration['features']);

/** The rest of the configuration agent-sts's provider sets. */
export const agentStsConfiguration = {
  clientAuthMethods: CLIENT_AUTH_METHODS,
  enabledJWA: { clientAuthSigningAlgValues: CLIENT_ASSERTION_ALGS, idTokenSigningAlgValues: [...SIGNING_ALGS] },
  scopes: [],
  claims: {},
} as Configuration;

/** agent-sts's grants, with their parameters. */
export function registerAgentStsGrants(provider: Provider): void {
  provider.registerGrantType('client_credentials', builtinClientCredentials(provider) as never, CLIENT_CREDENTIALS_PARAMS, CLIENT_CREDENTIALS_DUPES);
  provider.registerGrantType(TOKEN_EXCHANGE_GRANT, refuse as never, TOKEN_EXCHANGE_PARAMS, TOKEN_EXCHANGE_DUPES);
  provider.registerGrantType(JWT_BEARER_GRANT, refuse as never, JWT_BEARER_PARAMS, JWT_BEARER_DUPES);
}
