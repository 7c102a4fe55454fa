import { errors as joseErrors } from 'jose';

/** A token that fails verification; `message` says why and is safe to show to the caller. */
export class TokenVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenVerificationError';
  }
}

/** Maps jose's errors to a short reason that is safe to show. */
export function asVerificationError(err: unknown, what: string): TokenVerificationError {
  if (err instanceof TokenVerificationError) return err;
  if (err instanceof joseErrors.JWTExpired) return new TokenVerificationError(`the ${what} has expired`);
  if (err instanceof joseErrors.JWTClaimValidationFailed) return new TokenVerificationError(`the ${what} ${err.claim} claim is not valid (${err.reason})`);
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new TokenVerificationError(`the ${what} alg is not allowed`);
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenVerificationError(`the ${what} signature is not valid`);
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return new TokenVerificationError(`the ${what} is malformed`);
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new TokenVerificationError(`the ${what} is signed by an unknown key`);
  return new TokenVerificationError(`the ${what} could not be verified`);
}
