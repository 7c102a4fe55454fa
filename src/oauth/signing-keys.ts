import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { ExternalSigningKey } from 'oidc-provider';
import type { JWK } from 'jose';
import { signJwsInput } from '../tokens/compact-jws.js';

/**
 * A server signing key as oidc-provider's external signing key: the provider's tokens (access tokens from
 * client credentials and CIBA) are signed by the same `node:crypto` path as the tokens we mint ourselves,
 * on the thread pool, instead of through WebCrypto.
 */
class ServerSigningKey extends ExternalSigningKey {
  readonly #kid: string;
  readonly #alg: string;
  readonly #private: KeyObject;
  readonly #public: KeyObject;

  constructor(jwk: JWK & { kid: string; alg: string }) {
    super();
    this.#kid = jwk.kid;
    this.#alg = jwk.alg;
    this.#private = createPrivateKey({ key: jwk as never, format: 'jwk' });
    this.#public = createPublicKey(this.#private);
  }

  override get kid(): string {
    return this.#kid;
  }

  override get alg(): string {
    return this.#alg;
  }

  override keyObject(): KeyObject {
    return this.#public;
  }

  override sign(data: Uint8Array): Promise<Uint8Array> {
    return signJwsInput(this.#alg, data, this.#private);
  }
}

/** The provider's `jwks.keys` for our private signing JWKs. */
export function providerSigningKeys(keys: JWK[]): ExternalSigningKey[] {
  return keys.map((jwk) => {
    if (!jwk.kid || !jwk.alg) throw new Error('a signing key needs kid and alg');
    return new ServerSigningKey(jwk as JWK & { kid: string; alg: string });
  });
}
