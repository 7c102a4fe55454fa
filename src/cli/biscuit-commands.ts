import type { JWK } from 'jose';
import { CliError, describeThrown } from './cli-error.js';
import { rootKeyIdOfToken } from '../tokens/biscuit-keys.js';
import type { BiscuitChain, BiscuitHop } from '../tokens/biscuit-chain.js';
import type { VerifiedToken } from '../verifier/verifier.js';

const BASE64URL = /^[A-Za-z0-9_-]+={0,2}$/;

/** A single base64url string (no dots) naming a root key id: a Biscuit, as `verifyRequest` reads bearer tokens. */
export function isBiscuit(token: string): boolean {
  return BASE64URL.test(token) && rootKeyIdOfToken(token) !== undefined;
}

/** The issuer's JWK set, from `<issuer>/jwks`. */
async function fetchJwks(issuer: string): Promise<{ keys: JWK[] }> {
  let res: Response;
  try {
    res = await fetch(`${issuer}/jwks`);
  } catch (err) {
    throw new CliError(`cannot reach ${issuer}: ${describeThrown(err)}`, 1);
  }
  const body = await res.json().catch(() => undefined) as { keys?: unknown } | undefined;
  if (!res.ok || !Array.isArray(body?.keys)) throw new CliError(`${issuer}/jwks: no JWK set (HTTP ${res.status})`, 1);
  return { keys: body.keys as JWK[] };
}

/** Each block's Datalog, authority first, read from a token whose signatures the root key verified. */
async function readBlocks(token: string, jwks: { keys: JWK[] }): Promise<{ rootKeyId: number; revocationIds: string[]; blocks: { index: number; source: string }[] }> {
  const [{ loadBiscuit, biscuitRootKeys, BiscuitError }, { parseBiscuit }] = await Promise.all([import('../tokens/biscuit.js'), import('../tokens/biscuit-chain.js')]);
  const b = await loadBiscuit();
  let parsed;
  try {
    parsed = parseBiscuit(b, token, biscuitRootKeys(jwks));
  } catch (err) {
    if (err instanceof BiscuitError) throw new CliError(`cannot decode the Biscuit: ${err.message}`, 1);
    throw err;
  }
  const { biscuit, rootKeyId } = parsed;
  try {
    const blocks = Array.from({ length: biscuit.countBlocks() }, (_, index) => ({ index, source: biscuit.getBlockSource(index) }));
    return { rootKeyId, revocationIds: (biscuit.getRevocationIdentifiers() as unknown[]).map(String), blocks };
  } catch {
    throw new CliError('cannot decode the Biscuit: its blocks could not be printed', 1);
  } finally {
    biscuit.free();
  }
}

/** A hop for display: who handed on to whom, why, who signed, and the limits from then on. */
function hopView(h: BiscuitHop): Record<string, unknown> {
  return {
    index: h.index, delegator: h.delegator, delegate: h.delegate, context: h.context, signedBy: h.signedBy,
    rights: h.rights, audiences: h.audiences, budget: h.budget, expires: h.expires, ...(h.delegateKey ? { delegateKey: h.delegateKey } : {}),
  };
}

/** The chain's reading for display: authority facts, hops and what the last delegate holds (dates print as ISO strings). */
function chainView(chain: BiscuitChain): Record<string, unknown> {
  return { authority: chain.authority, hops: chain.hops.map(hopView), current: chain.current };
}

/**
 * `decode BISCUIT --issuer URL`: the root key id, revocation ids and each block's Datalog source, and the
 * chain as a delegator reads it (or why it cannot be read, e.g. expired). The wasm library only parses a
 * Biscuit with its root public key, so the issuer's JWKS is needed; signatures are checked on the way,
 * revocation and requests are not.
 */
export async function decodeBiscuit(token: string, issuer: string | undefined): Promise<unknown> {
  if (!issuer) {
    throw new CliError('a Biscuit can only be decoded with its issuer\'s root key: pass --issuer URL or set AGENT_STS_URL', 2);
  }
  const jwks = await fetchJwks(issuer);
  const { rootKeyId, revocationIds, blocks } = await readBlocks(token, jwks);
  const { readBiscuitChain, BiscuitError } = await import('../tokens/biscuit.js');
  let chain: { chain: Record<string, unknown> } | { chainError: string };
  try {
    chain = { chain: chainView(await readBiscuitChain(token, jwks)) };
  } catch (err) {
    if (!(err instanceof BiscuitError)) throw err;
    chain = { chainError: err.message };
  }
  return { type: 'biscuit', rootKeyId, blockCount: blocks.length, revocationIds, blocks, ...chain, signaturesVerified: true, verified: false };
}

export interface BiscuitCheck {
  issuer: string;
  audience: string;
  tools: string[];
  spend?: number;
}

/** What a verified Biscuit says, for printing: the holder, the actors, the rights and each hop. */
function verifiedView(v: VerifiedToken, check: BiscuitCheck): Record<string, unknown> {
  const chain = v.chain!;
  return {
    valid: true, type: v.type, subject: v.subject, holder: v.clientId, clientId: v.clientId, actors: v.actors, scopes: v.scopes,
    audiences: chain.current.audiences, budget: chain.current.budget, txn: v.txn, expiresAt: v.expiresAt, expires: chain.current.expires,
    hops: chain.hops.map(hopView),
    rootKeyId: chain.rootKeyId, revocationIds: chain.revocationIds,
    request: { tools: check.tools, resource: check.audience, ...(check.spend !== undefined ? { spend: check.spend } : {}) },
  };
}

/**
 * `verify BISCUIT --audience A [--tool T]... [--spend CENTS]`: the whole chain as a resource server checks
 * it with `Verifier.verifyBiscuit` (root key from the JWKS, revocation list, the tools, the audience as the
 * resource, the spend).
 */
export async function verifyBiscuitToken(token: string, check: BiscuitCheck): Promise<unknown> {
  const { Verifier, VerificationError } = await import('../verifier/index.js');
  const verifier = new Verifier({ issuer: check.issuer, audience: check.audience });
  try {
    const verified = await verifier.verifyBiscuit(token, { tools: check.tools, ...(check.spend !== undefined ? { spend: check.spend } : {}) });
    return verifiedView(verified, check);
  } catch (err) {
    if (err instanceof VerificationError) throw new CliError(`invalid: ${err.message}`, 1);
    throw new CliError(`cannot verify: ${describeThrown(err)}`, 1);
  }
}
