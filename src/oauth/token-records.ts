import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from '../log/logger.js';
import type { EventsRepo } from '../storage/events-repo.js';
import type { NewTokenRecord, TokensRepo } from '../storage/tokens-repo.js';
import type { RecordWriter } from '../storage/record-writer.js';
import { accessTokenRecord } from '../tokens/access-token.js';
import { isDatabaseUnavailable } from '../storage/database-errors.js';
import { failedOnDatabase } from './server-error-causes.js';
import type { IssuedTokenVerifier, VerifiedClaims } from './grants/issued-tokens.js';
import { stepRunGuard, workflowTags, type WorkflowIssuance } from './workflow-intent.js';
import type { AnonymousRefusals } from '../http/anonymous-refusals.js';

interface Deps {
  tokens: TokensRepo;
  records: RecordWriter;
  /** Says why a presented token's record check failed. */
  issuedTokens: Pick<IssuedTokenVerifier, 'refusal'>;
  events: EventsRepo;
  /** Records the refusals of callers that did not authenticate. */
  anonymous: Pick<AnonymousRefusals, 'refused'>;
  logger: Logger;
}

/** What a grant handler may add to the record of the token it issues (parent, actor chain, txn). */
export interface IssuanceContext {
  record?: Partial<Pick<NewTokenRecord, 'parent_jti' | 'actor' | 'txn'>>;
  /** The whole record, from a grant that minted the token itself. */
  complete?: NewTokenRecord;
  /** Refuse the token if its transaction already holds this many tokens of its type. */
  maxPerTxn?: number;
  /** The token it was exchanged for, whose record must still be good when this record is inserted. */
  parent?: VerifiedClaims['recordCheck'];
  /** The workflow step the token is issued for: checked again, atomically, as its record is inserted. */
  workflow?: WorkflowIssuance;
}

interface SignedClaimsState {
  /** The claims of the access token oidc-provider signed in this request; null when it signed more than one. */
  signedClaims?: Record<string, unknown> | null;
}

/** Called by the JWT access-token customizer with the claims about to be signed, so the record needn't decode them. */
export function noteSignedClaims(ctx: unknown, claims: Record<string, unknown>): void {
  const state = (ctx as { state?: SignedClaimsState } | undefined)?.state;
  if (state) state.signedClaims = state.signedClaims === undefined ? claims : null;
}

/**
 * A refusal of a caller that did not authenticate: client authentication failed (`invalid_client`), or the
 * request was refused before it (no client known). oidc-provider names the client before checking its
 * credentials, so a named client alone is no proof.
 */
export function anonymousRefusal(ctx: KoaContextWithOIDC, error: string): boolean {
  return error === 'invalid_client' || !ctx.oidc?.client;
}

function claimedClientId(ctx: KoaContextWithOIDC): string | null {
  const id = ctx.oidc?.client?.clientId ?? (ctx.oidc?.params as { client_id?: string } | undefined)?.client_id;
  return typeof id === 'string' ? id.slice(0, 2048) : null;
}

/**
 * Around the token endpoint: every issued token is recorded (committed) before the response leaves;
 * when the record can't be written the client gets 503 and no token. Every refusal is recorded too.
 */
export function tokenRecordsMiddleware(deps: Deps) {
  return async function recordTokenEndpoint(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
    await next();
    if (ctx.oidc?.route !== 'token') return;
    const body = ctx.body as Record<string, unknown> | undefined;
    const grantType = (ctx.oidc.params as { grant_type?: string } | undefined)?.grant_type;
    const clientId = claimedClientId(ctx);
    if (ctx.status === 200 && typeof body?.access_token === 'string') {
      let record: NewTokenRecord | undefined;
      try {
        const issuance = (ctx.state as { issuance?: IssuanceContext }).issuance;
        record = issuance?.complete ?? accessTokenRecord(body.access_token, issuance?.record, (ctx.state as SignedClaimsState).signedClaims ?? undefined);
        const issued = { action: `token:${grantType}`, client_id: clientId };
        const parent = issuance?.parent;
        let refusal: { error: string; detail: string | undefined } | undefined;
        if (issuance?.workflow) {
          const step = stepRunGuard(deps.tokens, issuance.workflow, record.jti);
          refusal = await deps.tokens.insertGuarded(record, async (trx) => {
            if (parent && !(await deps.tokens.parentHolds(parent, trx))) return { error: 'invalid_grant', detail: undefined };
            const why = await step(trx);
            return why === undefined ? undefined : { error: 'invalid_request', detail: why };
          }, issued);
        } else {
          const limit = issuance?.maxPerTxn !== undefined && record.txn ? issuance.maxPerTxn : undefined;
          const outcome = await deps.records.write(record, issued, { ...(limit !== undefined ? { maxPerTxn: limit } : {}), ...(parent ? { parent } : {}) });
          if (outcome === 'over_txn_limit') refusal = { error: 'invalid_request', detail: `the transaction already has the maximum of ${limit} Txn-Tokens` };
          else if (outcome === 'parent_refused') refusal = { error: 'invalid_grant', detail: undefined };
        }
        if (refusal) {
          const detail = refusal.detail ?? (await deps.issuedTokens.refusal(parent!)) ?? `the ${parent!.what} changed while this request was answered; try again`;
          ctx.status = 400;
          ctx.body = { error: refusal.error, error_description: detail };
          await deps.events.record({ decision: 'refused', action: `token:${grantType}`, client_id: clientId, reason: refusal.error, detail, ...workflowTags(ctx) });
          return;
        }
      } catch (err) {
        deps.logger.error({ err: { message: (err as Error).message }, client_id: clientId }, 'token record could not be written; token withheld');
        ctx.status = 503;
        ctx.set('Retry-After', '1');
        ctx.body = { error: 'temporarily_unavailable', error_description: 'the token could not be recorded; try again' };
        // With the database unreachable the event can't be written either; trying would only delay the answer.
        if (!isDatabaseUnavailable(err)) {
          await deps.events.record({ decision: 'refused', action: `token:${grantType ?? 'unknown'}`, client_id: clientId, reason: 'temporarily_unavailable', detail: 'record write failed' }).catch(() => {});
        }
        return;
      }
    } else if (ctx.status >= 400 && body && typeof body.error === 'string' && !failedOnDatabase(ctx)) {
      const event = {
        decision: 'refused' as const,
        action: `token:${typeof grantType === 'string' ? grantType.slice(0, 200) : 'unknown'}`,
        client_id: clientId,
        reason: body.error,
        detail: (ctx.state as { refusalDetail?: string }).refusalDetail ?? (typeof body.error_description === 'string' ? body.error_description : null),
      };
      await (anonymousRefusal(ctx, body.error) ? deps.anonymous.refused(ctx, event) : deps.events.record({ ...event, ...workflowTags(ctx) }))
        .catch((err: Error) => deps.logger.warn({ err: { message: err.message } }, 'decision event not recorded'));
    }
  };
}
