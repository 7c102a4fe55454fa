import type { JWK } from 'jose';
import { loadBiscuit } from './biscuit-wasm.js';
import { biscuitKeyText, biscuitRootKeys, isBiscuitKeyText } from './biscuit-keys.js';
import { BiscuitError } from './biscuit-errors.js';
import { inspectBiscuit, parseBiscuit, type BiscuitChain } from './biscuit-chain.js';
import { appendHop, nextHop, type DelegationRequest } from './biscuit-token.js';

/**
 * Reads a token's chain for a delegator: signatures against the issuer's root keys, the chain's
 * structure, unexpired. No request is checked: this is what the delegator holds, not what it uses.
 */
export async function readBiscuitChain(token: string, jwks: { keys?: JWK[] }, now = new Date()): Promise<BiscuitChain> {
  return inspectBiscuit(await loadBiscuit(), token, { rootKeys: biscuitRootKeys(jwks), now });
}

/**
 * Delegates offline: appends a delegation block for `req.delegate`, signed by the delegator's own
 * private key (Ed25519 or P-256 JWK), which must be the key the chain named for the current delegate.
 * Only narrowing is possible; verifiers check the whole chain with the issuer's root key (from `jwks`).
 */
export async function delegate(token: string, req: DelegationRequest, delegatorKey: JWK, jwks: { keys?: JWK[] }, opts: { now?: Date } = {}): Promise<string> {
  const chain = await readBiscuitChain(token, jwks, opts.now);
  const b = await loadBiscuit();
  const signerText = biscuitKeyText(delegatorKey);
  if (chain.current.holderKey !== signerText) {
    throw new BiscuitError('signer', chain.current.holderKey
      ? `this key is not the key of ${chain.current.holder}, the current delegate`
      : `${chain.current.holder} has no key in the chain: delegate through the token endpoint instead`, chain.hops.length + 1);
  }
  if (typeof req.delegateKey === 'string' && !isBiscuitKeyText(req.delegateKey)) throw new BiscuitError('malformed', 'delegateKey is not a Biscuit public key');
  const hop = nextHop(chain, req);
  const { biscuit } = parseBiscuit(b, token, biscuitRootKeys(jwks));
  try {
    const next = appendHop(b, biscuit, hop, chain.current, delegatorKey);
    try {
      return next.toBase64();
    } finally {
      next.free();
    }
  } finally {
    biscuit.free();
  }
}
