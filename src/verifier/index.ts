/**
 * agent-sts/verifier: what resource servers (MCP tool servers, A2A agents, APIs) import to check
 * agent-sts tokens offline, with keys discovered from the issuer's metadata.
 */
export { Verifier, targetUri } from './verifier.js';
export type { Act, HttpRequestLike, VerifiedRequest, VerifiedToken, VerifierOptions } from './verifier.js';
export { SecurityEventError, VerificationError, VerificationUnavailableError } from './errors.js';
export type { SecurityEventErrorCode, VerificationErrorCode } from './errors.js';
export { clientCredentialsTokens, clientSecretBasic } from './client-credentials.js';
export type { ClientCredentialsOptions } from './client-credentials.js';
export { SsfReceiver, ssfConfigurationUrl, POLL_DELIVERY, PUSH_DELIVERY } from './ssf-receiver.js';
export type { SsfReceiverOptions, StreamConfiguration } from './ssf-receiver.js';
export { CREDENTIAL_CHANGE, RECEIVED_EVENTS, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE } from './security-signals.js';
export type { SecurityEvent, SubjectId } from './security-signals.js';
export { MemoryReplayCache, ReplayCacheFullError } from './replay-cache.js';
export type { ReplayCache } from './replay-cache.js';
export {
  expressGuard, guardRequest, koaGuard, protectedResourceMetadata, protectedResourceMetadataPath, protectedResourceMetadataPaths, protectedResourceMetadataUrl,
  PROTECTED_RESOURCE_METADATA_PATH,
} from './middleware.js';
export type { GuardOptions, GuardOutcome, ProtectedResourceMetadataOptions } from './middleware.js';
