/**
 * Error codes of RFC 6750 §3.1 and RFC 9449 §7.1, and `temporarily_unavailable` (503, as RFC 6749 §4.1.2.1
 * names it) when a one-time proof cannot be recorded, so it is refused rather than accepted unrecorded.
 */
export type VerificationErrorCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'invalid_dpop_proof' | 'temporarily_unavailable';

const STATUS: Record<VerificationErrorCode, number> = {
  invalid_request: 400,
  invalid_token: 401,
  insufficient_scope: 403,
  invalid_dpop_proof: 401,
  temporarily_unavailable: 503,
};

/** A refused request: `status` and `wwwAuthenticate()` are what to answer with. */
export class VerificationError extends Error {
  readonly status: number;
  /** For `temporarily_unavailable`: when to try again (seconds). */
  retryAfterSeconds?: number;

  constructor(
    readonly code: VerificationErrorCode,
    description: string,
    /** The scheme the challenge names: `DPoP` for bound tokens and proof errors, else `Bearer`. */
    readonly scheme: 'Bearer' | 'DPoP' = 'Bearer',
    readonly requiredScopes: string[] = [],
    /** True when no credentials were presented at all (RFC 6750 §3.1: then no error code). */
    readonly missing = false,
  ) {
    super(description);
    this.name = 'VerificationError';
    this.status = STATUS[code];
  }

  /** The `WWW-Authenticate` value (RFC 6750 §3, RFC 9449 §7.1, RFC 9728 §5.1). */
  wwwAuthenticate(opts: { resourceMetadata?: string; algs?: string[] } = {}): string {
    const params: string[] = [];
    if (!this.missing) {
      params.push(`error="${this.code}"`, `error_description="${this.message.replace(/["\\]/g, "'")}"`);
    }
    if (this.requiredScopes.length) params.push(`scope="${this.requiredScopes.join(' ')}"`);
    if (opts.resourceMetadata) params.push(`resource_metadata="${opts.resourceMetadata}"`);
    if (this.scheme === 'DPoP' && opts.algs) params.push(`algs="${opts.algs.join(' ')}"`);
    return params.length ? `${this.scheme} ${params.join(', ')}` : this.scheme;
  }
}

/**
 * A request that could not be verified for now, through no fault of its token: a Biscuit's Datalog ran past
 * its time limit on a busy machine. Not a refusal: answer `503` with `Retry-After: retryAfter` (as
 * `guardRequest` does) and the same request may be retried.
 */
export class VerificationUnavailableError extends Error {
  readonly status = 503;
  readonly retryable = true;

  constructor(description: string, readonly retryAfter = 1) {
    super(description);
    this.name = 'VerificationUnavailableError';
  }
}

/** RFC 8935 §2.3 error codes for a refused Security Event Token. */
export type SecurityEventErrorCode = 'invalid_request' | 'invalid_key' | 'invalid_issuer' | 'invalid_audience' | 'authentication_failed' | 'access_denied';

/** A Security Event Token that was not accepted; `code` and `message` form the RFC 8935 error body. */
export class SecurityEventError extends Error {
  constructor(readonly code: SecurityEventErrorCode, description: string) {
    super(description);
    this.name = 'SecurityEventError';
  }
}
