import { hash } from 'node:crypto';

/** base64url(SHA-256(token)): what records keep instead of the token, and the `ath`/`wth` form. */
export function tokenHash(token: string): string {
  return hash('sha256', token, 'base64url');
}
