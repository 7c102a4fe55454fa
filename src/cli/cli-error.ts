/** A command-line refusal: the message and the exit code (2 for usage, 1 for a refused request). */
export class CliError extends Error {
  constructor(message: string, readonly code: 1 | 2) {
    super(message);
  }
}
