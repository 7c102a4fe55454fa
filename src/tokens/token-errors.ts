/** A token that fails verification; `message` says why and is safe to show to the caller. */
export class TokenVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenVerificationError';
  }
}
