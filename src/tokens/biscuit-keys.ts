import type { JWK } from 'jose';
import type { BiscuitApi } from './biscuit-wasm.js';
import { rootKeyIdOf } from '../keys/biscuit-root-id.js';

export { BISCUIT_KID_PREFIX, rootKeyIdOf } from '../keys/biscuit-root-id.js';

type PrivateKey = BiscuitApi['PrivateKey']['prototype'];
type PublicKey = BiscuitApi['PublicKey']['prototype'];

/** A key in Biscuit's text form (`ed25519/<hex>` or `secp256r1/<hex of the compressed point>`). */
const KEY_TEXT = /^(ed25519\/[0-9a-f]{64}|secp256r1\/0[23][0-9a-f]{64})$/;

export function isBiscuitKeyText(value: unknown): value is string {
  return typeof value === 'string' && KEY_TEXT.test(value);
}

const b64 = (value: unknown, bytes: number, what: string): Buffer => {
  const out = typeof value === 'string' ? Buffer.from(value, 'base64url') : Buffer.alloc(0);
  if (out.length !== bytes) throw new TypeError(`${what} must be ${bytes} bytes`);
  return out;
};

/**
 * A public JWK (Ed25519 or P-256) in Biscuit's text form, the form delegation blocks name keys in and
 * `trusting` scopes take.
 */
export function biscuitKeyText(jwk: JWK): string {
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return `ed25519/${b64(jwk.x, 32, 'an Ed25519 key\'s x').toString('hex')}`;
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') {
    const y = b64(jwk.y, 32, 'a P-256 key\'s y');
    return `secp256r1/0${2 + (y[31]! & 1)}${b64(jwk.x, 32, 'a P-256 key\'s x').toString('hex')}`;
  }
  throw new TypeError('a Biscuit key must be an Ed25519 (OKP) or P-256 (EC) JWK');
}

/** The first key of a JWK set that can sign Biscuit blocks, in text form. */
export function firstBiscuitKeyText(keys: readonly JWK[] | undefined): string | undefined {
  for (const jwk of keys ?? []) {
    try {
      return biscuitKeyText(jwk);
    } catch { /* not a usable key type */ }
  }
  return undefined;
}

/** Biscuit's `PublicKey` for a key in text form; validated first, since bad input can break the wasm instance. */
export function biscuitPublicKey(b: BiscuitApi, text: string): PublicKey {
  if (!isBiscuitKeyText(text)) throw new TypeError('not a Biscuit public key');
  const [alg, hex] = text.split('/') as [string, string];
  return b.PublicKey.fromString(hex, alg === 'ed25519' ? b.SignatureAlgorithm.Ed25519 : b.SignatureAlgorithm.Secp256r1);
}

/** Biscuit's `PrivateKey` for a private JWK (Ed25519 or P-256). */
export function biscuitPrivateKey(b: BiscuitApi, jwk: JWK): PrivateKey {
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return b.PrivateKey.fromBytes(b64(jwk.d, 32, 'an Ed25519 private key'), b.SignatureAlgorithm.Ed25519);
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return b.PrivateKey.fromBytes(b64(jwk.d, 32, 'a P-256 private key'), b.SignatureAlgorithm.Secp256r1);
  throw new TypeError('a Biscuit signing key must be an Ed25519 (OKP) or P-256 (EC) private JWK');
}

/** Biscuit root public keys of a JWK set, by root key id, in text form. */
export function biscuitRootKeys(jwks: { keys?: readonly JWK[] }): Map<number, string> {
  const out = new Map<number, string>();
  for (const jwk of jwks.keys ?? []) {
    const id = rootKeyIdOf(jwk.kid);
    if (id === undefined || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') continue;
    try {
      out.set(id, biscuitKeyText(jwk));
    } catch { /* malformed key: skip */ }
  }
  return out;
}

/**
 * The root key id a serialized Biscuit names (its first protobuf field), read without parsing the
 * token, so a verifier can pick the root key first. Undefined when the token names none.
 */
export function rootKeyIdOfToken(token: string): number | undefined {
  const head = Buffer.from(token.slice(0, 16), 'base64url');
  if (head[0] !== 0x08) return undefined;
  let id = 0;
  for (let i = 1, shift = 0; i < head.length && shift < 35; i++, shift += 7) {
    id += (head[i]! & 0x7f) * 2 ** shift;
    if (head[i]! < 0x80) return id <= 0xffff_ffff ? id : undefined;
  }
  return undefined;
}
