// Types for the oidc-provider helpers the token-exchange grant reuses (the version is pinned in package.json).
declare module 'oidc-provider/lib/helpers/validate_dpop.js' {
  export interface DPoPProof {
    thumbprint: string;
    jti: string;
    iat: number;
  }
  export default function validateDpop(provider: unknown, ctx: unknown, accessToken?: string): Promise<DPoPProof | undefined>;
  export function checkDpopReplay(provider: unknown, ctx: unknown, dPoP: DPoPProof, clientId: string): Promise<void>;
  export function getDpopJwt(provider: unknown, ctx: unknown): { payload: Record<string, unknown> } | undefined;
}

// The request's context, which oidc-provider keeps for the duration of each of its requests.
declare module 'oidc-provider/lib/helpers/als.js' {
  import type { AsyncLocalStorage } from 'node:async_hooks';
  const als: AsyncLocalStorage<unknown>;
  export default als;
}

// How far a DPoP proof's iat may be from the provider's time, either way (seconds).
declare module 'oidc-provider/lib/helpers/challenge.js' {
  export const CHALLENGE_OK_WINDOW: number;
}

declare module 'oidc-provider/lib/helpers/sender_constraints.js' {
  export function checkDpopRequired(provider: unknown, ctx: unknown, dPoP: unknown): void;
}

// The built-in client-credentials grant, registered again with the workflow parameters (grants/client-credentials.ts).
declare module 'oidc-provider/lib/actions/grants/client_credentials.js' {
  export const handler: (provider: unknown, helpers: Record<string, unknown>, ctx: unknown) => Promise<void>;
  export const parameters: Set<string>;
}

declare module 'oidc-provider/lib/helpers/grants.js' {
  type Helper = (provider: unknown, ...args: never[]) => unknown;
  export const consumeGrantSource: Helper;
  export const findAccount: Helper;
  export const findGrantSource: Helper;
  export const validateGrant: Helper;
  export const checkDpopRequired: Helper;
  export const checkMtlsCert: Helper;
  export const validateDpop: Helper;
  export const checkDpopReplay: Helper;
  export const applyAuthorizationDetails: Helper;
  export const resolveAndApplyResource: Helper;
  export const resolveRequestedResources: Helper;
  export const validateClientScope: Helper;
  export const applyRefreshTokenBindings: Helper;
  export const shouldIssueRefreshToken: Helper;
  export const buildTokenResponse: Helper;
}

// The built-in CIBA grant, registered again with the workflow checks of an approved step (grants/ciba.ts).
declare module 'oidc-provider/lib/actions/grants/ciba.js' {
  export const handler: (provider: unknown, helpers: Record<string, unknown>, ctx: unknown) => Promise<void>;
  export const parameters: Set<string>;
  export const grantType: string;
}
