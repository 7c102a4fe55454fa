import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { loadBiscuit } from '../../src/tokens/biscuit-wasm.js';
import { mintBiscuit } from '../../src/tokens/biscuit-token.js';
import { biscuitKeyText } from '../../src/tokens/biscuit-keys.js';
import type { AuthorityFacts } from '../../src/tokens/biscuit-blocks.js';

export async function privateJwk(alg: 'EdDSA' | 'ES256' = 'EdDSA'): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
  return exportJWK(privateKey);
}

export const publicOf = ({ d: _d, ...pub }: JWK): JWK => pub;

/** A root key pair as the server publishes it: `kid` biscuit-<id>. */
export async function rootKey(rootKeyId = 7): Promise<{ privateJwk: JWK; rootKeyId: number; jwks: { keys: JWK[] }; text: string }> {
  const key = await privateJwk();
  return { privateJwk: key, rootKeyId, jwks: { keys: [{ ...publicOf(key), kid: `biscuit-${rootKeyId}`, alg: 'EdDSA', use: 'sig' }] }, text: biscuitKeyText(key) };
}

export const secondsFromNow = (s: number) => new Date((Math.floor(Date.now() / 1000) + s) * 1000);

export function authority(holder: string, holderKey: JWK | undefined, over: Partial<AuthorityFacts> = {}): AuthorityFacts {
  return {
    issuer: 'https://sts.example', subject: 'spiffe://agent-sts.test/user-agent', tokenId: 'jti-1', txn: 'txn-1', holder,
    rights: ['search', 'read', 'write', 'pay', 'admin'], audiences: ['https://tools.example', 'https://pay.example'],
    budget: 10_000, maxDepth: 5, expires: secondsFromNow(600),
    ...(holderKey ? { holderKey: biscuitKeyText(holderKey) } : {}), ...over,
  };
}

export async function mint(root: { privateJwk: JWK; rootKeyId: number }, facts: AuthorityFacts): Promise<string> {
  return mintBiscuit(await loadBiscuit(), facts, root).token;
}
