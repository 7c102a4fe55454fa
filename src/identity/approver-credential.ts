import { createHash, randomBytes } from 'node:crypto';

/** A new approver credential (256 random bits), shown once; only its hash is stored. */
export const newApproverCredential = () => `apv_${randomBytes(32).toString('base64url')}`;

/** The stored form of an approver credential or page session token: SHA-256, base64url (they are random, not chosen). */
export const secretHash = (secret: string) => createHash('sha256').update(secret).digest('base64url');
