import { createPublicKey, type KeyObject } from 'node:crypto';
import { ExternalSigningKey } from 'oidc-provider';
import type { ActiveSigner } from '../keys/key-manager.js';
import { signJwsInput } from '../tokens/compact-jws.js';

/**
 * A server signing key as oidc-provider's external signing key: the provider's tokens (access tokens from
 * client credentials and CIBA) are signed by the same `node:crypto` path as the tokens we mint ourselves,
 * instead of through WebCrypto (which signs on the thread pool).
 */
class ServerSigningKey extends ExternalSigningKey {
  readonly #signer: ActiveSigner;
  readonly #public: KeyObject;

  constructor(signer: ActiveSigner) {
    super();
    this.#signer = signer;
    this.#public = createPublicKey(signer.key);
  }

  override get kid(): string {
    return this.#signer.kid;
  }

  override get alg(): string {
    return this.#signer.alg;
  }

  override keyObject(): KeyObject {
    return this.#public;
  }

  override sign(data: Uint8Array): Promise<Uint8Array> {
    return signJwsInput(this.#signer.alg, data, this.#signer.key, this.#signer.threadPool);
  }
}

/** The provider's `jwks.keys` for our active signing keys. */
export function providerSigningKeys(signers: ActiveSigner[]): ExternalSigningKey[] {
  return signers.map((signer) => new ServerSigningKey(signer));
}
