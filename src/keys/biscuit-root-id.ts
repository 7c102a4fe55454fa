/** JWKS `kid` prefix of Biscuit root keys; the rest is the root key id tokens name the key by (a 32-bit integer). */
export const BISCUIT_KID_PREFIX = 'biscuit-';

/** The root key id a Biscuit root key's `kid` stands for, or undefined when the `kid` is not one. */
export function rootKeyIdOf(kid: unknown): number | undefined {
  if (typeof kid !== 'string' || !kid.startsWith(BISCUIT_KID_PREFIX)) return undefined;
  const id = Number(kid.slice(BISCUIT_KID_PREFIX.length));
  return Number.isInteger(id) && id >= 0 && id <= 0xffff_ffff && `${BISCUIT_KID_PREFIX}${id}` === kid ? id : undefined;
}
