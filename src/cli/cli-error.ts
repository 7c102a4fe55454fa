/** A command-line refusal: the message and the exit code (2 for usage, 1 for a refused request). */
export class CliError extends Error {
  constructor(message: string, readonly code: 1 | 2) {
    super(message);
  }
}

/** `--help` or `-h` was given: `text` is the usage to print on stdout, with exit code 0. */
export class CliHelp extends Error {
  constructor(readonly text: string) {
    super('help');
    this.name = 'CliHelp';
  }
}

/**
 * Any thrown value in words, for the one line the CLI prints: an Error's message; a string as it is; other
 * values (the Biscuit library throws plain objects) as JSON; never a bare "undefined".
 */
export function describeThrown(err: unknown): string {
  if (err instanceof Error) return err.message || `${err.name || 'Error'} with no message`;
  if (typeof err === 'string') return err.trim() || 'an error with an empty message';
  if (err === undefined || err === null) return 'failed with no error value (nothing was thrown with it)';
  try {
    const json = JSON.stringify(err);
    if (json !== undefined) return `failed with a non-Error value: ${json}`;
  } catch { /* a cycle or a BigInt */ }
  return `failed with a non-Error value: ${String(err)}`;
}
