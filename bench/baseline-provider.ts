/**
 * The baseline for the token-endpoint benchmark: a plain oidc-provider with its in-memory adapter, one
 * static client_secret_basic client, issuing the same kind of token (RFC 9068 JWT, EdDSA) for client credentials.
 * With FEATURES=agent-sts, the same provider configured with what agent-sts's provider enables besides (its client
 * authentication methods, introspection, revocation, DPoP, CIBA in poll mode, the token-exchange and jwt-bearer
 * grants and client credentials with their parameters), none of agent-sts's own code run on a request: how much
 * of the token endpoint's cost is oidc-provider serving that configuration.
 */
import { createServer } from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { type Configuration } from 'oidc-provider';
import { reportReady } from './child-ready.js';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = await generateKeyPair('EdDSA', { extractable: true });
const features: Configuration['features'] = {
  devInteractions: { enabled: false },
  clientCredentials: { enabled: true },
  resourceIndicators: {
    enabled: true,
    defaultResource: () => 'https://api.example.com',
    getResourceServerInfo: () => ({ scope: 'read', audience: 'https://api.example.com', accessTokenTTL: 300, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'EdDSA' } } }),
    useGrantedResource: () => false,
  },
};
const agentSts = process.env.FEATURES === 'agent-sts' ? await import('./baseline-features.js') : undefined;
const provider = new Provider(issuer, {
  jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'k1', alg: 'EdDSA', use: 'sig' }] as never },
  clients: [{ client_id: 'bench', client_secret: 'bench-secret', grant_types: ['client_credentials'], response_types: [], redirect_uris: [], token_endpoint_auth_method: 'client_secret_basic', id_token_signed_response_alg: 'EdDSA' }],
  features: agentSts ? agentSts.withAgentStsFeatures(features) : features,
  ...agentSts?.agentStsConfiguration,
  responseTypes: [],
});
agentSts?.registerAgentStsGrants(provider);
createServer(provider.callback()).listen(port, '127.0.0.1', reportReady);
