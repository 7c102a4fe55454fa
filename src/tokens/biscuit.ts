/**
 * agent-sts/biscuit: chained delegation tokens. Agents narrow and hand on authority offline with
 * {@link delegate}; verifiers check the whole chain with the issuer's root key ({@link verifyBiscuit}).
 */
export { BISCUIT_TOKEN_TYPE } from './biscuit-blocks.js';
export type { AuthorityFacts, BiscuitLimits, BiscuitRequest, HopFacts } from './biscuit-blocks.js';
export { DEFAULT_RUN_LIMITS, MAX_BISCUIT_BLOCKS, MAX_BISCUIT_CHARS, verifyBiscuit } from './biscuit-chain.js';
export type { BiscuitChain, BiscuitHop, RunLimits, VerifyBiscuitOptions } from './biscuit-chain.js';
export { delegate, readBiscuitChain } from './biscuit-delegation.js';
export type { DelegationRequest } from './biscuit-token.js';
export { BiscuitError, BiscuitTimeoutError } from './biscuit-errors.js';
export type { BiscuitFailure } from './biscuit-errors.js';
export { biscuitKeyText, biscuitRootKeys } from './biscuit-keys.js';
export { loadBiscuit } from './biscuit-wasm.js';
