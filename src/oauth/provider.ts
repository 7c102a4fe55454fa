import { randomBytes } from 'node:crypto';
import Provider, { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { ActiveSigner } from '../keys/key-manager.js';
import type { Logger } from '../log/logger.js';
import type { AgentsCache } from '../storage/agents-cache.js';
import type { OidcPayloadsRepo } from '../storage/oidc-payloads-repo.js';
import type { ReplayRepo } from '../storage/replay-repo.js';
import type { ClientSecretVerifier } from '../identity/client-secret.js';
import { adapterFactory } from './adapter.js';
import { providerSigningKeys } from './signing-keys.js';
import { reuseClientsPerMetadata } from './client-lookup.js';
import { AGENT_METADATA, type AgentClientFields } from './client-metadata.js';
import { resourceServerFor, defaultResourceFor } from './resource-servers.js';
import { bindToWorkloadKey } from './workload-bound-tokens.js';
import { noteSignedClaims } from './token-records.js';
import { serverErrorAnswers, noteServerError } from './server-error-causes.js';
import { addWorkflowClaims, registerClientCredentials } from './grants/client-credentials.js';
import type { WorkflowIntents } from './workflow-intent.js';
import { approvalTtl, approverAccounts, cibaFeature, workflowExtraParams, type CibaDeps } from './ciba.js';
import { registerCibaGrant } from './grants/ciba.js';
import { witClientIdRequired } from './wit-client-auth.js';
import { providerReplayUntil } from './provider-replay.js';

export interface ProviderDeps {
  issuer: string;
  signingAlg: 'EdDSA' | 'ES256';
  accessTokenTtl: number;
  trustProxy: boolean;
  signingKeys: ActiveSigner[];
  /** Agent lookups for client authentication (short-lived cache). */
  agents: AgentsCache;
  payloads: OidcPayloadsRepo;
  replay: ReplayRepo;
  secrets: ClientSecretVerifier;
  logger: Logger;
  /** Grants of ours on the token endpoint (token exchange). */
  grants: { name: string; handler: (ctx: KoaContextWithOIDC) => Promise<void>; params: string[]; dupes?: string[] }[];
  /** Workflow steps named by client-credentials requests (intent-bound tokens). */
  workflowIntents: WorkflowIntents;
  /** Human approval of workflow steps (CIBA, poll mode). */
  ciba: Omit<CibaDeps, 'intents' | 'logger'>;
  /** Middleware run around every provider request (records, our introspection, discovery). */
  middleware: ((ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>)[];
}

export type AgentClient = InstanceType<Provider['Client']> & AgentClientFields;

/** Client authentication at the token endpoint; `none` stands for WIT authentication, checked before the provider (wit-client-auth.ts). */
export const CLIENT_AUTH_METHODS: NonNullable<Configuration['clientAuthMethods']> = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'];

/** Signing algorithms accepted for `private_key_jwt` client assertions. */
export const CLIENT_ASSERTION_ALGS = ['EdDSA', 'Ed25519', 'ES256', 'PS256', 'RS256'];

const cookieKeys = [randomBytes(32).toString('base64url')];

/**
 * Builds the oidc-provider instance for the current signing keys. The keystore of a provider is
 * fixed, so a key rotation builds a new instance and the HTTP layer switches to it.
 */
export function buildProvider(deps: ProviderDeps): Provider {
  // The first key of the configured algorithm signs; list it first.
  const keys = [...deps.signingKeys].sort((a, b) => Number(b.alg === deps.signingAlg) - Number(a.alg === deps.signingAlg));

  const Adapter = adapterFactory(deps.agents, deps.payloads);
  const configuration: Configuration = {
    adapter: Adapter,
    jwks: { keys: providerSigningKeys(keys) },
    cookies: { keys: cookieKeys },
    clientAuthMethods: CLIENT_AUTH_METHODS,
    enabledJWA: {
      clientAuthSigningAlgValues: CLIENT_ASSERTION_ALGS as never,
      idTokenSigningAlgValues: ['EdDSA', 'ES256'] as never,
    },
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: deps.signingAlg,
    },
    responseTypes: [],
    scopes: [],
    claims: {},
    // Approvers are the accounts: a CIBA request names one (login_hint); its Grant is the approval.
    findAccount: approverAccounts(deps.ciba.approvers),
    extraParams: workflowExtraParams(deps.workflowIntents),
    extraClientMetadata: {
      properties: [...AGENT_METADATA],
    },
    features: {
      devInteractions: { enabled: false },
      // Our keys sign through node:crypto (signing-keys.ts).
      externalSigningSupport: { enabled: true, ack: 'experimental-01' },
      userinfo: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      dPoP: { enabled: true },
      ciba: cibaFeature({ ...deps.ciba, intents: deps.workflowIntents, logger: deps.logger }),
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client) => defaultResourceFor(client as AgentClient),
        getResourceServerInfo: (ctx, resource, client) => resourceServerFor(ctx, resource, client as AgentClient, deps),
        useGrantedResource: () => false,
      },
    },
    formats: {
      customizers: {
        jwt: async (ctx, token, jwt) => {
          await bindToWorkloadKey(ctx, token, jwt);
          addWorkflowClaims(ctx, jwt);
          noteSignedClaims(ctx, jwt.payload);
        },
      },
    },
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? deps.accessTokenTtl,
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? deps.accessTokenTtl,
      BackchannelAuthenticationRequest: approvalTtl(deps.ciba.approvalTtl) as never,
      // A Grant is made when an approver approves; the agent redeems it before the request expires.
      Grant: deps.ciba.approvalTtl,
      // Not returned: a CIBA token response carries the step's access token only.
      IdToken: 60,
    },
    clockTolerance: 5,
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  };

  const provider = new Provider(deps.issuer, configuration);
  provider.proxy = deps.trustProxy;
  if (deps.agents.keepsRecords) reuseClientsPerMetadata(provider, new Adapter('Client'));

  // Secrets are stored as slow hashes, never in the clear.
  provider.Client.prototype.compareClientSecret = function compareClientSecret(this: { clientSecret: string }, actual: string) {
    return deps.secrets.verify(actual, this.clientSecret);
  } as never;

  // One-time identifiers (client assertion and DPoP proof jti) are claimed atomically, for as long as they can be accepted.
  (provider.ReplayDetection as unknown as { unique: (iss: string, jti: string, exp: number) => Promise<boolean> }).unique = (iss, jti, exp) => deps.replay.claim(iss, jti, providerReplayUntil(jti, exp));

  registerClientCredentials(provider, deps.workflowIntents);
  registerCibaGrant(provider, { intents: deps.workflowIntents, approvals: deps.ciba.approvals, now: deps.ciba.now, pollInterval: deps.ciba.pollInterval });
  for (const g of deps.grants) provider.registerGrantType(g.name, g.handler as never, g.params, g.dupes);
  for (const mw of deps.middleware) provider.use(mw);
  provider.use(witClientIdRequired());
  // Innermost, so the middleware above sees the answer (a database outage's 503, say) rather than the 500.
  provider.use(serverErrorAnswers());

  // The provider's detailed reason for a refusal, kept for the decision record (never sent to the client).
  for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'backchannel_authentication.error']) {
    (provider as unknown as { on(e: string, f: (ctx: KoaContextWithOIDC, err: { error_detail?: string }) => void): void }).on(event, (ctx, err) => {
      if (err.error_detail) (ctx.state as { refusalDetail?: string }).refusalDetail = err.error_detail;
    });
  }

  provider.on('server_error', (ctx: KoaContextWithOIDC, err: Error) => {
    const cause = noteServerError(ctx, err);
    if (cause === 'database_unavailable') {
      deps.logger.warn({ err: { name: err.name, message: err.message }, route: ctx.oidc?.route }, 'database unreachable; answered 503');
      return;
    }
    if (cause === 'datalog_timeout') {
      deps.logger.warn({ err: { name: err.name, message: err.message }, route: ctx.oidc?.route }, 'Biscuit evaluation ran past its time limit; answered 503');
      return;
    }
    if (cause === 'assertion_nested_too_deeply') {
      deps.logger.warn({ route: ctx.oidc?.route, client_id: ctx.oidc?.client?.clientId }, 'client assertion nested too deeply; answered invalid_client');
      return;
    }
    deps.logger.error({ err: { name: err.name, message: err.message, stack: err.stack }, route: ctx.oidc?.route }, 'oauth server error');
  });

  return provider;
}

export { errors };
