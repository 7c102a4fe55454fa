import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs. Credentials never reach a log line: request logs carry no query,
 * body or credential header, and these paths are redacted should an object carry them.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'agent-sts' },
      redact: {
        paths: [
          'authorization', '*.authorization', 'headers.authorization', 'headers.dpop', 'headers.cookie',
          'client_secret', '*.client_secret', 'token', '*.token', 'access_token', '*.access_token',
          'client_assertion', '*.client_assertion', 'private', '*.private',
        ],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
