import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';
import type { Knex } from 'knex';
import { createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { KeysRepo, type SigningKeyRow } from '../storage/keys-repo.js';
import { BISCUIT_KID_PREFIX, rootKeyIdOf } from './biscuit-root-id.js';
import { decryptPrivateKey, encryptPrivateKey } from './key-encryption.js';

export const SIGNING_ALGS = ['EdDSA', 'ES256'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];
/** The Biscuit root key's kind (an Ed25519 key; `alg` column value, not a JWS algorithm). */
export const BISCUIT_ROOT = 'Biscuit';
/** Every kind of key the server keeps one active key of. */
const KEY_KINDS = [...SIGNING_ALGS, BISCUIT_ROOT] as const;
type KeyKind = (typeof KEY_KINDS)[number];

/** An active signing key: its kid, the JWS algorithm it signs with, the private key, where it signs. */
export interface ActiveSigner {
  kid: string;
  alg: string;
  key: KeyObject;
  /** Sign on libuv's thread pool rather than on the event loop (SIGN_ON_THREAD_POOL). */
  threadPool: boolean;
}

export interface PublicKeyInfo {
  kid: string;
  alg: string;
  status: 'next' | 'active' | 'retired';
  activate_at: number | null;
  created_at: string;
  retired_at: string | null;
  published: boolean;
  encrypted: boolean;
}

/**
 * The server's signing keys: generated on first start, kept in the database (private parts
 * encrypted when an encryption key is configured), rotated on demand, published as a JWKS.
 */
export class KeyManager {
  private readonly repo: KeysRepo;
  private active: JWK[] = [];
  private biscuitRoot: JWK | undefined;
  private readonly biscuitRoots = new Map<number, JWK>();
  private readonly importedPrivate = new Map<string, KeyObject>();
  private readonly importedPublic = new Map<string, { key: KeyObject; alg: string }>();
  private published = new Map<string, JWK>();
  private publishedAt = 0;
  private reading: Promise<void> | undefined;
  private lastPublished: { keys: JWK[] } | undefined;

  constructor(
    private readonly db: Knex,
    private readonly encryptionKey: Buffer | undefined,
    private readonly now: () => number = () => Math.floor(Date.now() / 1000),
    private readonly signOnThreadPool = false,
  ) {
    this.repo = new KeysRepo(db);
  }

  /** Makes sure one active key exists per algorithm and loads the active private keys. */
  async init(): Promise<void> {
    await this.db.transaction(async (trx) => {
      await this.repo.lock(trx);
      const active = await this.repo.active(trx);
      for (const kind of KEY_KINDS) {
        if (!active.some((k) => k.alg === kind)) await this.createKey(kind, trx);
      }
    });
    await this.load();
    // The published set, read once now, can be served even if the database is unreachable later.
    await this.jwks();
  }

  /** Reloads the active keys; returns true when they changed (for example after another server rotated). */
  async load(): Promise<boolean> {
    const rows = await this.repo.active();
    const before = this.active.map((k) => k.kid).join();
    this.active = SIGNING_ALGS.map((alg) => rows.find((r) => r.alg === alg)).filter((r): r is SigningKeyRow => !!r).map((r) => this.privateJwk(r));
    const root = rows.find((r) => r.alg === BISCUIT_ROOT);
    this.biscuitRoot = root ? this.privateJwk(root) : undefined;
    const changed = before !== this.active.map((k) => k.kid).join();
    // Keys this server now signs with are published: the next lookup of an unknown kid reads them at once.
    if (changed) this.publishedAt = 0;
    return changed;
  }

  /** Active private JWKs, one per algorithm. */
  signingKeys(): JWK[] {
    return this.active;
  }

  /** The active key of an algorithm, for the tokens we sign ourselves. */
  async signer(alg: SigningAlg): Promise<ActiveSigner> {
    const jwk = this.active.find((k) => k.alg === alg);
    if (!jwk?.kid) throw new Error(`no active ${alg} signing key`);
    return this.signerOf(jwk as JWK & { kid: string; alg: string });
  }

  /** Every active signing key, one per algorithm, ready to sign (for oidc-provider's keystore). */
  signers(): ActiveSigner[] {
    return this.active.map((jwk) => this.signerOf(jwk as JWK & { kid: string; alg: string }));
  }

  /** A private JWK as a signer, its `KeyObject` imported once per kid. */
  private signerOf(jwk: JWK & { kid: string; alg: string }): ActiveSigner {
    let key = this.importedPrivate.get(jwk.kid);
    if (!key) {
      key = createPrivateKey({ key: jwk as never, format: 'jwk' });
      this.importedPrivate.set(jwk.kid, key);
    }
    return { kid: jwk.kid, alg: jwk.alg, key, threadPool: this.signOnThreadPool };
  }

  /** The active Biscuit root key (a private Ed25519 JWK) and the root key id tokens name it by. */
  activeBiscuitRoot(): { privateJwk: JWK; rootKeyId: number } {
    const jwk = this.biscuitRoot;
    const rootKeyId = rootKeyIdOf(jwk?.kid);
    if (!jwk || rootKeyId === undefined) throw new Error('no active Biscuit root key');
    return { privateJwk: jwk, rootKeyId };
  }

  /**
   * The private root key a token's root key id names, while it is published (a delegation the server
   * appends is signed with the key of the token's own root).
   */
  async biscuitRootById(rootKeyId: number): Promise<JWK | undefined> {
    const cached = this.biscuitRoots.get(rootKeyId);
    if (cached) return cached;
    const kid = `${BISCUIT_KID_PREFIX}${rootKeyId}`;
    if (!(await this.publicKey(kid))) return undefined;
    const row = await this.repo.find(kid);
    if (!row || row.alg !== BISCUIT_ROOT) return undefined;
    const jwk = this.privateJwk(row);
    this.biscuitRoots.set(rootKeyId, jwk);
    return jwk;
  }

  /**
   * A published public key by `kid`, for verifying tokens we signed. Published keys are cached and
   * re-read from the database at most once a second when an unknown `kid` comes along.
   */
  async publicKey(kid: string | undefined): Promise<JWK | undefined> {
    if (!kid) return undefined;
    // A lookup arriving while the published keys are being re-read waits for that read.
    if (!this.published.has(kid) && this.reading) await this.reading;
    if (!this.published.has(kid) && Date.now() - this.publishedAt >= 1000) {
      this.publishedAt = Date.now();
      this.reading = this.jwks().then(({ keys }) => {
        this.published = new Map(keys.map((k) => [k.kid!, k]));
      }).finally(() => {
        this.reading = undefined;
      });
      await this.reading;
    }
    return this.published.get(kid);
  }

  /**
   * A published JWT signing key by `kid`, as a `KeyObject` with its algorithm (imported once), for
   * verifying tokens we signed. Biscuit root keys are published too but never verify a JWT.
   */
  async verificationKey(kid: string | undefined): Promise<{ key: KeyObject; alg: string } | undefined> {
    if (!kid || rootKeyIdOf(kid) !== undefined) return undefined;
    const jwk = await this.publicKey(kid);
    if (!jwk || typeof jwk.alg !== 'string') return undefined;
    let found = this.importedPublic.get(kid);
    if (!found) {
      found = { key: createPublicKey({ key: jwk as never, format: 'jwk' }), alg: jwk.alg };
      this.importedPublic.set(kid, found);
    }
    return found;
  }

  /**
   * Creates new keys for every algorithm. They are committed, and so published in the JWKS, at once;
   * they start signing `delaySeconds` later (at once when 0), when they replace the keys of their algorithm,
   * which stay published while tokens they signed are alive. A rotation while keys are still pending
   * replaces the pending keys. The caller then calls {@link activateDue} (now, and at `activateAt`).
   * `inTransaction` runs in the rotation's transaction.
   */
  async rotate(delaySeconds = 0, inTransaction?: (trx: Knex) => Promise<void>): Promise<{ created: string[]; activateAt: number }> {
    const created: string[] = [];
    const activateAt = this.now() + delaySeconds;
    await this.db.transaction(async (trx) => {
      await this.repo.lock(trx);
      await this.repo.retire((await this.repo.pending(trx)).map((k) => k.kid), trx);
      for (const kind of KEY_KINDS) created.push(await this.createKey(kind, trx, activateAt));
      // Written with the new keys (a security event announcing them), committed or rolled back with them.
      if (inTransaction) await inTransaction(trx);
    });
    this.publishedAt = 0;
    return { created, activateAt };
  }

  /**
   * Switches signing to pending keys whose time has come (retiring the keys they replace) and reloads
   * the signing keys. Safe to call from every server sharing the database. Returns true when the
   * signing keys changed.
   */
  async activateDue(): Promise<boolean> {
    await this.db.transaction(async (trx) => {
      const due = (await this.repo.pending(trx)).filter((k) => (k.activate_at ?? 0) <= this.now());
      if (!due.length) return;
      await this.repo.lock(trx);
      const stillDue = (await this.repo.pending(trx)).filter((k) => (k.activate_at ?? 0) <= this.now());
      const algs = new Set(stillDue.map((k) => k.alg));
      await this.repo.retire((await this.repo.active(trx)).filter((k) => algs.has(k.alg)).map((k) => k.kid), trx);
      await this.repo.activate(stillDue.map((k) => k.kid), trx);
    });
    return this.load();
  }

  /** Public keys: pending and active keys, and retired keys with unexpired tokens. */
  async jwks(): Promise<{ keys: JWK[] }> {
    const rows = await this.repo.published(this.now());
    this.lastPublished = { keys: rows.map((r) => r.public_jwk as JWK) };
    return this.lastPublished;
  }

  /** The key set as last read from the database, to publish while the database can't be reached. */
  lastJwks(): { keys: JWK[] } | undefined {
    return this.lastPublished;
  }

  async list(): Promise<PublicKeyInfo[]> {
    const [rows, published] = await Promise.all([this.repo.all(), this.repo.published(this.now())]);
    const live = new Set(published.map((r) => r.kid));
    return rows.map((r) => ({
      kid: r.kid, alg: r.alg, status: r.status, activate_at: r.activate_at, created_at: r.created_at, retired_at: r.retired_at, published: live.has(r.kid), encrypted: r.encrypted,
    }));
  }

  private async createKey(kind: KeyKind, trx: Knex, activateAt?: number): Promise<string> {
    // A Biscuit root key is an Ed25519 key whose kid carries the root key id tokens name it by.
    const alg = kind === BISCUIT_ROOT ? 'EdDSA' : kind;
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
    const pub = await exportJWK(publicKey);
    const kid = kind === BISCUIT_ROOT ? `${BISCUIT_KID_PREFIX}${randomBytes(4).readUInt32BE()}` : await calculateJwkThumbprint(pub);
    const publicJwk = { ...pub, kid, alg, use: 'sig' };
    const privateJson = JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg, use: 'sig' });
    await this.repo.insert({
      kid,
      alg: kind,
      public_jwk: publicJwk,
      private_jwk: this.encryptionKey ? encryptPrivateKey(privateJson, this.encryptionKey, kid) : privateJson,
      encrypted: !!this.encryptionKey,
      status: activateAt === undefined ? 'active' : 'next',
      activate_at: activateAt ?? null,
    }, trx);
    return kid;
  }

  private privateJwk(row: SigningKeyRow): JWK {
    if (!row.encrypted) return JSON.parse(row.private_jwk) as JWK;
    if (!this.encryptionKey) throw new Error(`signing key ${row.kid} is encrypted: set AGENT_STS_KEY_ENCRYPTION_KEY to the key it was encrypted with`);
    return JSON.parse(decryptPrivateKey(row.private_jwk, this.encryptionKey, row.kid)) as JWK;
  }
}
