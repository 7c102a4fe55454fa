import { hash as digestOf, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/** scrypt cost parameters for stored client secrets. */
const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;

function scryptAsync(secret: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, KEYLEN, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** A new client secret: 256 random bits, base64url. */
export function generateClientSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Slow hash for storage: `scrypt$N$r$p$salt$hash`. */
export async function hashClientSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(secret, salt, N, R, P);
  return ['scrypt', N, R, P, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

/**
 * Checks a presented secret against a stored hash. A successful check is remembered as
 * SHA-256(secret) per stored hash, so repeated requests don't pay the slow hash each time; concurrent
 * checks of the same secret against the same hash (a client's first burst after a start) share one slow hash.
 */
export class ClientSecretVerifier {
  private readonly verified = new Map<string, Buffer>();
  /** Slow hashes under way, by stored hash and SHA-256 of the presented secret. */
  private readonly pending = new Map<string, Promise<boolean>>();

  /** `onSlowHash` is told of each scrypt computation started. */
  constructor(private readonly maxEntries = 10_000, private readonly onSlowHash: () => void = () => {}) {}

  async verify(presented: string, stored: string): Promise<boolean> {
    const digest = digestOf('sha256', presented, 'buffer');
    const known = this.verified.get(stored);
    if (known) return timingSafeEqual(known, digest);
    const key = `${digest.toString('base64url')}$${stored}`;
    let check = this.pending.get(key);
    if (!check) {
      check = this.slowCheck(presented, stored, digest).finally(() => this.pending.delete(key));
      this.pending.set(key, check);
    }
    return check;
  }

  private async slowCheck(presented: string, stored: string, digest: Buffer): Promise<boolean> {
    const [scheme, n, r, p, salt, hash] = stored.split('$');
    if (scheme !== 'scrypt' || !n || !r || !p || !salt || !hash) return false;
    const expected = Buffer.from(hash, 'base64url');
    this.onSlowHash();
    const actual = await scryptAsync(presented, Buffer.from(salt, 'base64url'), Number(n), Number(r), Number(p));
    const ok = actual.length === expected.length && timingSafeEqual(actual, expected);
    if (ok) {
      if (this.verified.size >= this.maxEntries) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(stored, digest);
    }
    return ok;
  }
}
