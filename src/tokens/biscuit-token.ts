import type { JWK } from 'jose';
import { datalogParams, type BiscuitApi } from './biscuit-wasm.js';
import { biscuitKeyText, biscuitPrivateKey, biscuitPublicKey } from './biscuit-keys.js';
import { BiscuitError, fromLibraryError } from './biscuit-errors.js';
import { authorityBlock, hopBlock, type AuthorityFacts, type BiscuitLimits, type HopFacts } from './biscuit-blocks.js';
import { hasVisibleText, type BiscuitChain } from './biscuit-chain.js';

type Biscuit = BiscuitApi['Biscuit']['prototype'];

/** Mints a token whose authority block states `facts`, signed by the root key `rootKeyId` names. */
export function mintBiscuit(b: BiscuitApi, facts: AuthorityFacts, root: { privateJwk: JWK; rootKeyId: number }): { token: string; revocationId: string } {
  const { code, params } = authorityBlock(facts);
  const key = biscuitPrivateKey(b, root.privateJwk);
  // `build` consumes the builder.
  const builder = new b.BiscuitBuilder();
  builder.addCodeWithParameters(code, datalogParams(params), {});
  builder.setRootKeyId(root.rootKeyId);
  const biscuit = builder.build(key);
  key.free();
  try {
    return { token: biscuit.toBase64(), revocationId: lastRevocationId(biscuit) };
  } finally {
    biscuit.free();
  }
}

export function lastRevocationId(biscuit: Biscuit): string {
  const ids = biscuit.getRevocationIdentifiers() as string[];
  return String(ids[ids.length - 1]);
}

/**
 * Appends delegation block `hop` as a third-party block signed with `signerJwk` (a private JWK), stating
 * only the limits that differ from `parent`'s.
 */
export function appendHop(b: BiscuitApi, biscuit: Biscuit, hop: HopFacts, parent: BiscuitLimits, signerJwk: JWK): Biscuit {
  return appendThirdPartyBlock(b, biscuit, hopBlock(hop, parent), signerJwk);
}

/** Appends a third-party block saying `code` (its values as `params`), signed with `signerJwk` (a private JWK). */
export function appendThirdPartyBlock(b: BiscuitApi, biscuit: Biscuit, { code, params }: { code: string; params: Record<string, unknown> }, signerJwk: JWK): Biscuit {
  const builder = new b.BlockBuilder();
  const privateKey = biscuitPrivateKey(b, signerJwk);
  const publicKey = biscuitPublicKey(b, biscuitKeyText(signerJwk));
  try {
    builder.addCodeWithParameters(code, datalogParams(params), {});
    // `createBlock` consumes the request.
    const block = biscuit.getThirdPartyRequest().createBlock(privateKey, builder);
    try {
      return biscuit.appendThirdPartyBlock(publicKey, block);
    } finally {
      block.free();
    }
  } catch (err) {
    throw fromLibraryError(err, 'appending a delegation');
  } finally {
    builder.free();
    privateKey.free();
    publicKey.free();
  }
}

/** What a delegator hands on; anything left out stays as the delegator holds it. */
export interface DelegationRequest {
  /** The delegate's workload identifier. */
  delegate: string;
  /** The delegate's public key (JWK or Biscuit text form), so it can delegate further offline. */
  delegateKey?: JWK | string;
  tools?: string[];
  audience?: string | string[];
  /** Spending ceiling in integer cents. */
  budget?: number;
  /** Expiry, as a Date or epoch seconds. */
  expires?: Date | number;
  /** Why the authority is handed on; must not be empty. */
  context: string;
}

const MAX_TEXT = 2048;

/**
 * The next delegation block for a chain: the request's limits, each of which must be within what the
 * current delegate holds, a non-empty context, and room left under `max_depth`.
 */
export function nextHop(chain: BiscuitChain, req: DelegationRequest): HopFacts {
  const index = chain.hops.length + 1;
  const fail = (failure: 'widened' | 'context' | 'depth' | 'malformed', message: string) => new BiscuitError(failure, message, index);
  if (index > chain.authority.maxDepth) throw fail('depth', `max_depth ${chain.authority.maxDepth} allows no further delegation`);
  if (typeof req.delegate !== 'string' || !req.delegate || req.delegate.length > MAX_TEXT) throw fail('malformed', 'delegate must be a workload identifier');
  if (typeof req.context !== 'string' || !hasVisibleText(req.context)) throw fail('context', 'a delegation needs a non-empty context');
  if (req.context.length > MAX_TEXT) throw fail('malformed', `context must be at most ${MAX_TEXT} characters`);
  const { current } = chain;
  const rights = req.tools === undefined ? current.rights : [...new Set(req.tools)].sort();
  if (rights.some((t) => typeof t !== 'string' || !t || t.length > MAX_TEXT)) throw fail('malformed', 'tools must be non-empty strings');
  const widerTools = rights.filter((t) => !current.rights.includes(t));
  if (widerTools.length) throw fail('widened', `not held by the delegator: ${widerTools.join(' ')}`);
  const audiences = req.audience === undefined ? current.audiences : [...new Set([req.audience].flat())].sort();
  if (audiences.some((a) => typeof a !== 'string' || !current.audiences.includes(a))) throw fail('widened', 'audience not held by the delegator');
  const budget = req.budget ?? current.budget;
  if (!Number.isSafeInteger(budget) || budget < 0) throw fail('malformed', 'budget must be a non-negative integer (cents)');
  if (budget > current.budget) throw fail('widened', `budget ${budget} exceeds the delegator's ${current.budget}`);
  const expires = req.expires === undefined ? current.expires : req.expires instanceof Date ? req.expires : new Date(req.expires * 1000);
  if (Number.isNaN(expires.getTime())) throw fail('malformed', 'expires must be a date');
  if (expires.getTime() > current.expires.getTime()) throw fail('widened', 'a delegation cannot outlive the delegator\'s token');
  const delegateKey = req.delegateKey === undefined ? undefined : typeof req.delegateKey === 'string' ? req.delegateKey : biscuitKeyText(req.delegateKey);
  // Dates in Biscuit have second precision.
  const exp = new Date(Math.floor(expires.getTime() / 1000) * 1000);
  return {
    index, delegator: current.holder, delegate: req.delegate, context: req.context, rights, audiences, budget, expires: exp,
    ...(delegateKey ? { delegateKey } : {}),
  };
}
