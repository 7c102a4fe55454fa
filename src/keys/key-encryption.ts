import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const PREFIX = 'aes256gcm-v1';

/** Encrypts a private key at rest with AES-256-GCM; the key id is bound as additional data. */
export function encryptPrivateKey(plaintext: string, key: Buffer, kid: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(kid));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return [PREFIX, iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), ct.toString('base64url')].join('.');
}

export function decryptPrivateKey(envelope: string, key: Buffer, kid: string): string {
  const [prefix, iv, tag, ct] = envelope.split('.');
  if (prefix !== PREFIX || !iv || !tag || !ct) throw new Error(`signing key ${kid} is not in the expected encrypted form`);
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
  decipher.setAAD(Buffer.from(kid));
  decipher.setAuthTag(Buffer.from(tag, 'base64url'));
  try {
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
  } catch {
    throw new Error(`signing key ${kid} cannot be decrypted: AGENT_STS_KEY_ENCRYPTION_KEY is not the key it was encrypted with`);
  }
}
