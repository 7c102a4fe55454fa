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

import { datalogParams } from '../../src/tokens/biscuit-wasm.js';
import { biscuitPrivateKey, biscuitPublicKey } from '../../src/tokens/biscuit-keys.js';
import { hopBlock, type HopFacts } from '../../src/tokens/biscuit-blocks.js';

/**
 * Appends a block with the raw Biscuit API, bypassing agent-sts's delegation code: a third-party block
 * signed by `signer` (claiming to be signed by `claimedSigner`'s key when given), or an ordinary block.
 */
export async function rawAppend(token: string, root: { text: string; rootKeyId: number }, code: string, params: Record<string, unknown>, signer?: JWK): Promise<string> {
  const b = await loadBiscuit();
  const biscuit = b.Biscuit.fromBase64WithProvider(token, () => biscuitPublicKey(b, root.text));
  const builder = new b.BlockBuilder();
  builder.addCodeWithParameters(code, datalogParams(params), {});
  const next = signer
    ? biscuit.appendThirdPartyBlock(biscuitPublicKey(b, biscuitKeyText(signer)), biscuit.getThirdPartyRequest().createBlock(biscuitPrivateKey(b, signer), builder))
    : biscuit.appendBlock(builder);
  return next.toBase64();
}

/** A hop block in agent-sts's vocabulary, appended with the raw API (so nothing checks it on the way). */
export function rawHop(token: string, root: { text: string; rootKeyId: number }, hop: HopFacts, signer?: JWK): Promise<string> {
  const { code, params } = hopBlock(hop);
  return rawAppend(token, root, code, params, signer);
}

/** The protobuf fields of a serialized Biscuit (1 root key id, 2 authority, 3 blocks, 4 proof). */
function fields(bytes: Buffer): { field: number; raw: Buffer }[] {
  const out: { field: number; raw: Buffer }[] = [];
  let i = 0;
  const varint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const byte = bytes[i++]!;
      v += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return v;
      shift += 7;
    }
  };
  while (i < bytes.length) {
    const start = i;
    const tag = varint();
    if ((tag & 7) === 0) varint();
    else if ((tag & 7) === 2) {
      const length = varint();
      i += length;
    }
    else throw new Error(`unexpected wire type ${tag & 7}`);
    out.push({ field: tag >> 3, raw: bytes.subarray(start, i) });
  }
  return out;
}

/** Rewrites a token's list of delegation blocks (by index into its blocks), keeping everything else. */
export function editBlocks(token: string, edit: (blocks: Buffer[]) => Buffer[]): string {
  const parts = fields(Buffer.from(token, 'base64url'));
  const blocks = edit(parts.filter((p) => p.field === 3).map((p) => p.raw));
  const out = [...parts.filter((p) => p.field < 3).map((p) => p.raw), ...blocks, ...parts.filter((p) => p.field > 3).map((p) => p.raw)];
  return Buffer.concat(out).toString('base64url');
}
