import { KeyObject, sign, verify, type webcrypto } from 'node:crypto';

/**
 * Compact JWS (RFC 7515) signing and checking with `node:crypto` alone, for the two algorithms this
 * server signs with (EdDSA over Ed25519, ES256). A one-shot `sign` / `verify` on a cached `KeyObject` costs
 * about half of what going through WebCrypto does, and every token request pays it.
 */

/** A compact JWS split into its decoded parts; the signature is not checked yet. */
export interface CompactJws {
  header: Record<string, unknown>;
  claims: Record<string, unknown>;
  /** `BASE64URL(header) || '.' || BASE64URL(payload)`, the bytes the signature covers. */
  signingInput: string;
  signature: Buffer;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

function jsonObject(segment: string): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Splits a compact JWS whose header and payload are JSON objects. Segments must be strict base64url
 * (Node's decoder skips stray characters, which would let many strings stand for one token), and a
 * `crit` header is refused: we understand no extensions.
 */
export function parseCompactJws(token: string): CompactJws | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p))) return undefined;
  const header = jsonObject(parts[0]!);
  const claims = jsonObject(parts[1]!);
  if (!header || !claims || 'crit' in header) return undefined;
  return { header, claims, signingInput: `${parts[0]}.${parts[1]}`, signature: Buffer.from(parts[2]!, 'base64url') };
}

/**
 * The payload of a compact JWS, neither its header nor its signature read, nor checked: for choosing how to
 * verify a token (by the issuer it claims) before verifying it. The segment must be strict base64url, as above.
 */
export function unverifiedClaims(token: string): Record<string, unknown> | undefined {
  const start = token.indexOf('.') + 1;
  const end = token.indexOf('.', start);
  if (start === 0 || end === -1 || token.indexOf('.', end + 1) !== -1) return undefined;
  const payload = token.slice(start, end);
  return B64URL.test(payload) ? jsonObject(payload) : undefined;
}

/** `typ` compared the way RFC 7515 §4.1.9 allows: case-insensitively, `application/` optional. */
export const normalizeTyp = (typ: unknown) => (typeof typ === 'string' ? typ.toLowerCase().replace(/^application\//, '') : undefined);

const digestOf = (alg: string) => (alg === 'ES256' ? 'sha256' : null);
const keyFor = (alg: string, key: KeyObject) => (alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' as const } : key);

/** Whether `jws` is signed by `key` with `alg` (EdDSA / Ed25519 or ES256; any other alg is false). */
export function jwsSignatureValid(jws: CompactJws, alg: string, key: KeyObject): boolean {
  if (alg !== 'EdDSA' && alg !== 'Ed25519' && alg !== 'ES256') return false;
  try {
    return verify(digestOf(alg), Buffer.from(jws.signingInput), keyFor(alg, key), jws.signature);
  } catch {
    return false;
  }
}

/**
 * Signs a JWS signing input with `alg` (EdDSA or ES256): on the event loop (an Ed25519 signature takes about
 * 20 µs), or with `threadPool` on libuv's thread pool, where the event loop only queues the work but wakes a
 * pool thread for it (see SIGN_ON_THREAD_POOL in the README for when each pays).
 */
export function signJwsInput(alg: string, input: Uint8Array, key: KeyObject, threadPool = false): Promise<Buffer> {
  if (alg !== 'EdDSA' && alg !== 'ES256') return Promise.reject(new Error(`unsupported signing alg ${alg}`));
  if (!threadPool) {
    try {
      return Promise.resolve(sign(digestOf(alg), input, keyFor(alg, key)));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  return new Promise((resolve, reject) => {
    sign(digestOf(alg), input, keyFor(alg, key), (err, signature) => (err ? reject(err) : resolve(signature)));
  });
}

/** Signs `claims` as a compact JWS with `header` (which names `alg`: EdDSA or ES256). */
export async function signCompactJws(header: { alg: string } & Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject, threadPool = false): Promise<string> {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${input}.${(await signJwsInput(header.alg, Buffer.from(input), key, threadPool)).toString('base64url')}`;
}

/** A key for node:crypto, whether given as a `KeyObject` or a WebCrypto `CryptoKey`. */
export function asKeyObject(key: KeyObject | webcrypto.CryptoKey): KeyObject {
  return key instanceof KeyObject ? key : KeyObject.from(key);
}
