import als from 'oidc-provider/lib/helpers/als.js';
import { CHALLENGE_OK_WINDOW } from 'oidc-provider/lib/helpers/challenge.js';
import { getDpopJwt } from 'oidc-provider/lib/helpers/validate_dpop.js';
import type { KoaContextWithOIDC } from 'oidc-provider';

/**
 * The last second at which a one-time identifier oidc-provider asks us to claim can still be accepted,
 * given the `exp` the provider passes (both on the provider's clock, the system's).
 *
 * For a client assertion the provider passes `exp + clockTolerance`, which is that second already. For a
 * DPoP proof it passes its time plus `CHALLENGE_OK_WINDOW`, but it accepts a proof (without a nonce; no
 * nonce secret is configured, so a proof with one is refused) while `|now - iat| <= CHALLENGE_OK_WINDOW`:
 * a proof dated ahead is accepted up to `iat + CHALLENGE_OK_WINDOW`, after its entry would be gone. So the
 * entry of the request's DPoP proof lasts until then. Without a request to look at, the window is added
 * to be safe.
 */
export function providerReplayUntil(jti: string, exp: number): number {
  const ctx = als.getStore() as KoaContextWithOIDC | undefined;
  let until = exp;
  if (!ctx?.oidc) {
    until = exp + CHALLENGE_OK_WINDOW;
  } else {
    const proof = getDpopJwt(ctx.oidc.provider, ctx)?.payload;
    if (proof && proof.jti === jti && typeof proof.iat === 'number') until = Math.max(until, Math.ceil(proof.iat) + CHALLENGE_OK_WINDOW);
  }
  return until;
}
