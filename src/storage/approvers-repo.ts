import type { Knex } from 'knex';
import { hasNul } from './text.js';
import { EventsRepo } from './events-repo.js';

export interface ApproverRecord {
  id: string;
  status: 'active' | 'disabled';
  created_at: string;
}

const fromRow = (row: Record<string, unknown>): ApproverRecord => ({
  id: row.id as string,
  status: row.status as ApproverRecord['status'],
  created_at: new Date(row.created_at as string).toISOString(),
});

/** People who approve workflow steps; their credentials are kept as SHA-256 hashes only. */
export class ApproversRepo {
  constructor(private readonly db: Knex) {}

  /** Registers an approver with its `admin` event; undefined when the id is taken. */
  async register(id: string, credentialSha256: string): Promise<ApproverRecord | undefined> {
    return this.db.transaction(async (trx) => {
      const rows = await trx('approvers').insert({ id, credential_sha256: credentialSha256 }).onConflict('id').ignore().returning('*');
      if (!rows[0]) return undefined;
      await new EventsRepo(trx).record({ decision: 'admin', action: 'approver.register', detail: id });
      return fromRow(rows[0]);
    });
  }

  /** Replaces the credential (the old one stops working at once); false when no such approver. */
  async replaceCredential(id: string, credentialSha256: string): Promise<boolean> {
    if (hasNul(id)) return false;
    return this.db.transaction(async (trx) => {
      const n = await trx('approvers').where({ id }).update({ credential_sha256: credentialSha256, status: 'active' });
      if (!n) return false;
      await trx('approver_sessions').where({ approver_id: id }).delete();
      await new EventsRepo(trx).record({ decision: 'admin', action: 'approver.credential', detail: id });
      return true;
    });
  }

  /** Disables an approver and ends its page sessions; false when no such approver. */
  async disable(id: string): Promise<boolean> {
    if (hasNul(id)) return false;
    return this.db.transaction(async (trx) => {
      const n = await trx('approvers').where({ id }).update({ status: 'disabled' });
      if (!n) return false;
      await trx('approver_sessions').where({ approver_id: id }).delete();
      await new EventsRepo(trx).record({ decision: 'admin', action: 'approver.disable', detail: id });
      return true;
    });
  }

  async find(id: string): Promise<ApproverRecord | undefined> {
    if (hasNul(id)) return undefined;
    const row = await this.db('approvers').where({ id }).first();
    return row ? fromRow(row) : undefined;
  }

  /** The active approver holding a credential with this hash. */
  async findActiveByCredential(credentialSha256: string): Promise<ApproverRecord | undefined> {
    const row = await this.db('approvers').where({ credential_sha256: credentialSha256, status: 'active' }).first();
    return row ? fromRow(row) : undefined;
  }

  async list(limit: number, after?: string): Promise<ApproverRecord[]> {
    const q = this.db('approvers').orderBy('id').limit(limit);
    if (after !== undefined && !hasNul(after)) q.where('id', '>', after);
    return (await q).map(fromRow);
  }

  /** Starts a page session (its token and CSRF token are the caller's; only the session token's hash is kept). */
  async startSession(sessionSha256: string, approverId: string, csrfToken: string, expiresAt: number): Promise<void> {
    await this.db('approver_sessions').insert({ session_sha256: sessionSha256, approver_id: approverId, csrf_token: csrfToken, expires_at: expiresAt });
  }

  /** The live session's approver (still active) and CSRF token. */
  async findSession(sessionSha256: string, nowSec: number): Promise<{ approver: ApproverRecord; csrf_token: string } | undefined> {
    const row = await this.db('approver_sessions as s').join('approvers as a', 'a.id', 's.approver_id')
      .where({ 's.session_sha256': sessionSha256, 'a.status': 'active' }).andWhere('s.expires_at', '>', nowSec)
      .first('a.id', 'a.status', 'a.created_at', 's.csrf_token');
    return row ? { approver: fromRow(row), csrf_token: row.csrf_token as string } : undefined;
  }

  /** Deletes the page sessions past their expiry; how many. */
  async endExpiredSessions(nowSec: number): Promise<number> {
    return this.db('approver_sessions').where('expires_at', '<=', nowSec).delete();
  }

  async endSession(sessionSha256: string): Promise<void> {
    await this.db('approver_sessions').where({ session_sha256: sessionSha256 }).delete();
  }
}
