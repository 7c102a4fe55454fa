import { createHash } from 'node:crypto';

/** base64url(SHA-256(token)): what records keep instead of the token, and the `ath`/`wth` form. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}
