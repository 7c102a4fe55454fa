// Types for the oidc-provider helpers the token-exchange grant reuses (the version is pinned in package.json).
declare module 'oidc-provider/lib/helpers/validate_dpop.js' {
  export interface DPoPProof {
    thumbprint: string;
    jti: string;
    iat: number;
  }
  export default function validateDpop(provider: unknown, ctx: unknown, accessToken?: string): Promise<DPoPProof | undefined>;
  export function checkDpopReplay(provider: unknown, ctx: unknown, dPoP: DPoPProof, clientId: string): Promise<void>;
}

declare module 'oidc-provider/lib/helpers/sender_constraints.js' {
  export function checkDpopRequired(provider: unknown, ctx: unknown, dPoP: unknown): void;
}
