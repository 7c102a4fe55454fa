import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import type { Config } from '../config/config.js';
import { createLogger, type Logger } from '../log/logger.js';
import { openDatabase, promptly, type Database } from '../storage/database.js';
import { AgentsRepo } from '../storage/agents-repo.js';
import { AgentsCache } from '../storage/agents-cache.js';
import { RecordWriter } from '../storage/record-writer.js';
import { EventsRepo } from '../storage/events-repo.js';
import { TokensRepo } from '../storage/tokens-repo.js';
import { OidcPayloadsRepo } from '../storage/oidc-payloads-repo.js';
import { ReplayRepo } from '../storage/replay-repo.js';
import { SettingsRepo } from '../storage/settings-repo.js';
import { KeyManager } from '../keys/key-manager.js';
import { biscuitWarmUpFailure, loadBiscuit } from '../tokens/biscuit-wasm.js';
import { AgentRegistry } from '../identity/agent-registry.js';
import { ClientSecretVerifier } from '../identity/client-secret.js';
import { OAuthCore } from '../oauth/oauth-core.js';
import { tokenRecordsMiddleware } from '../oauth/token-records.js';
import { tokenStatusMiddleware } from '../oauth/token-status.js';
import { discoveryMiddleware } from '../oauth/discovery.js';
import { errorDetailMiddleware } from '../oauth/error-detail.js';
import { createApp } from './app.js';
import { witRoutes } from './wit-routes.js';
import { BISCUIT_REVOCATIONS_PATH, biscuitAdminRoutes, biscuitRevocationListRoutes } from './biscuit-routes.js';
import { WorkloadAuthenticator } from '../identity/workload-authenticator.js';
import { WitIssuer } from '../identity/wit-issuer.js';
import { createAttestors } from '../identity/attestors/index.js';
import { JoinTokensRepo } from '../storage/join-tokens-repo.js';
import { witClientAuth } from '../oauth/wit-client-auth.js';
import { IssuedTokenVerifier } from '../oauth/grants/issued-tokens.js';
import { ExternalJwtVerifier } from '../identity/trusted-issuers.js';
import { JWT_BEARER_DUPES, JWT_BEARER_GRANT, JWT_BEARER_PARAMS, jwtBearerHandler } from '../oauth/grants/jwt-bearer.js';
import { REQUESTED_TOKEN_TYPES, SUBJECT_TOKEN_TYPES_IN_USE, TOKEN_EXCHANGE_DUPES, TOKEN_EXCHANGE_GRANT, TOKEN_EXCHANGE_PARAMS, tokenExchangeHandler } from '../oauth/grants/token-exchange.js';
import { requireAdmin, resolveAdminTokenHash } from './admin/admin-token.js';
import { agentsRoutes } from './admin/agents-routes.js';
import { keysRoutes } from './admin/keys-routes.js';
import { tokensRoutes } from './admin/tokens-routes.js';
import { auditRoutes } from './admin/audit-routes.js';
import { AuditRepo } from '../storage/audit-repo.js';
import { WorkflowsRepo } from '../storage/workflows-repo.js';
import { WorkflowIntents } from '../oauth/workflow-intent.js';
import { workflowsRoutes } from './admin/workflows-routes.js';
import { ServerMetrics } from '../metrics/server-metrics.js';
import { SsfRepo } from '../storage/ssf-repo.js';
import { Transmitter } from '../events/transmitter.js';
import type { Lookup } from '../events/push-target.js';
import { ssfBearer, ssfRoutes } from './ssf-routes.js';
import { ApproversRepo } from '../storage/approvers-repo.js';
import { ApprovalsRepo } from '../storage/approvals-repo.js';
import { ApprovalDecisions } from '../oauth/approval-decisions.js';
import { backchannelMiddleware } from '../oauth/ciba.js';
import { CIBA_GRANT } from '../policy/workflows.js';
import { approversRoutes } from './admin/approvers-routes.js';
import { requireApprover } from './approvals/approver-auth.js';
import { approvalsRoutes } from './approvals/approvals-routes.js';
import { approvalPageRoutes } from './approvals/approval-page.js';
import { AnonymousRefusals } from './anonymous-refusals.js';

export interface RunningServer {
  url: string;
  port: number;
  db: Database;
  keys: KeyManager;
  logger: Logger;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
  now?: () => number;
  /** How often to look for keys rotated by another server sharing the database (ms; 0 disables). */
  keyRefreshMs?: number;
  /** Resolves Shared Signals push endpoint hosts (the system resolver unless given). */
  pushLookup?: Lookup;
}

/** Opens the database, runs migrations, loads keys and starts listening. */
export async function startServer(config: Config, opts: StartOptions = {}): Promise<RunningServer> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const now = opts.now ?? (() => Math.floor(Date.now() / 1000));
  if (!config.keyEncryptionKey) {
    logger.warn('AGENT_STS_KEY_ENCRYPTION_KEY is not set: signing keys are stored UNENCRYPTED in the database. Set a 32-byte key for production.');
  }
  const db = await openDatabase({
    databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolMax: config.databasePoolMax, timeoutMs: config.databaseTimeoutMs,
    // knex's messages as JSON log lines at warn (each is about one query or connection, the request says the rest),
    // first line only (the rest is a stack trace).
    log: (level, message) => logger.warn({ database: message.split('\n')[0]!.slice(0, 500), knex_level: level }, 'database client'),
  });
  let server: Server | undefined;
  let timer: NodeJS.Timeout | undefined;
  let transmitter: Transmitter | undefined;
  let sweep: NodeJS.Timeout | undefined;
  let anonymous: AnonymousRefusals | undefined;
  try {
    const applied = await db.migrate();
    if (applied.length) logger.info({ migrations: applied }, 'migrations applied');
    const knex = db.knex;
    const agents = new AgentsRepo(knex);
    const ssf = new SsfRepo(knex);
    const metrics = config.metricsEnabled
      ? new ServerMetrics({
        db, grantTypes: ['client_credentials', TOKEN_EXCHANGE_GRANT, JWT_BEARER_GRANT, CIBA_GRANT, 'unknown'],
        // A scrape answers promptly while the database hangs (the gauge then keeps its last value).
        outboxBacklog: promptly(() => ssf.backlog(), Math.min(config.databaseTimeoutMs, 500)),
      })
      : undefined;
    const keys = new KeyManager(knex, config.keyEncryptionKey, now, config.signOnThreadPool);
    await keys.init();
    // The Shared Signals transmitter: revocations and agent changes write security events to its outbox.
    transmitter = new Transmitter({
      issuer: config.issuer, db: knex, repo: ssf, keys, signingAlg: config.signingAlg, now, logger,
      opts: {
        push: {
          retryMinMs: config.ssf.pushRetryMinMs, retryMaxMs: config.ssf.pushRetryMaxMs, pauseAfterMs: config.ssf.pushPauseAfterSeconds * 1000,
          timeoutMs: config.ssf.pushTimeoutMs, sweepMs: 2000,
        },
        allowHttp: config.ssf.pushAllowHttp, allowAddresses: config.ssf.pushAllowAddresses, lookup: opts.pushLookup, pollMaxWaitMs: config.ssf.pollMaxWaitMs, maxStreamsPerClient: config.ssf.maxStreamsPerClient,
        minVerificationInterval: config.ssf.minVerificationInterval,
        encryptionKey: config.keyEncryptionKey, exclusiveDatabase: db.kind === 'embedded',
      },
    });
    const signals = transmitter.signals;
    const tokens = new TokensRepo(knex, metrics, signals);
    const events = new EventsRepo(knex, metrics);
    anonymous = new AnonymousRefusals(events, { ...config.anonymousRefusals, trustProxy: config.trustProxy }, logger, metrics);
    // Biscuit's wasm module is compiled and warmed up now, not at the first Biscuit request. A warm-up that
    // failed (its time limit can run out on a busy machine) stops nothing: the module works regardless.
    await loadBiscuit();
    const warmUpFailure = biscuitWarmUpFailure();
    if (warmUpFailure) logger.warn({ err: { name: warmUpFailure.name, message: warmUpFailure.message } }, 'Biscuit warm-up failed; serving without it');

    const adminHash = await resolveAdminTokenHash({ configured: config.adminToken, dataDir: config.dataDir, settings: new SettingsRepo(knex), logger });

    const replay = new ReplayRepo(knex, now);
    const agentsCache = new AgentsCache(agents, config.agentCacheTtlMs);
    const externalJwts = new ExternalJwtVerifier(config.trustedIssuers, now);
    const workflows = new WorkflowsRepo(knex);
    const workflowIntents = new WorkflowIntents({ workflows, tokens });
    const approvers = new ApproversRepo(knex);
    const approvals = new ApprovalsRepo(knex);
    const issuedTokens = new IssuedTokenVerifier({ issuer: config.issuer, trustDomain: config.trustDomain, keys, tokens, now });
    const oauth = new OAuthCore({
      issuer: config.issuer,
      signingAlg: config.signingAlg,
      accessTokenTtl: config.accessTokenTtl,
      trustProxy: config.trustProxy,
      agents: agentsCache,
      payloads: new OidcPayloadsRepo(knex, now),
      replay,
      secrets: new ClientSecretVerifier(10_000, () => metrics?.clientSecretHashed()),
      grants: [{
        name: TOKEN_EXCHANGE_GRANT,
        handler: tokenExchangeHandler({
          issuer: config.issuer, trustDomain: config.trustDomain, accessTokenTtl: config.accessTokenTtl, txnTokenTtl: config.txnTokenTtl,
          maxTxnTokensPerTxn: config.maxTxnTokensPerTxn, maxDelegationDepth: config.maxDelegationDepth, signingAlg: config.signingAlg,
          keys, verifier: issuedTokens, external: externalJwts, partners: config.partnerDomains.map((p) => p.issuer), now,
          biscuitTtl: config.biscuitTtl, tokens, agents, workflowIntents, replay,
        }),
        params: TOKEN_EXCHANGE_PARAMS,
        dupes: TOKEN_EXCHANGE_DUPES,
      }, {
        name: JWT_BEARER_GRANT,
        handler: jwtBearerHandler({
          issuer: config.issuer, accessTokenTtl: config.accessTokenTtl, signingAlg: config.signingAlg, keys, partners: config.partnerDomains,
          partnerJwts: new ExternalJwtVerifier(config.partnerDomains.map((p) => ({ ...p, audience: [config.issuer, `${config.issuer}/token`] })), now),
          replay, maxDelegationDepth: config.maxDelegationDepth, now,
        }),
        params: JWT_BEARER_PARAMS,
        dupes: JWT_BEARER_DUPES,
      }],
      logger,
      workflowIntents,
      ciba: { approvers, approvals, events, now, approvalTtl: config.approvalTtl, pollInterval: config.approvalPollInterval },
      middleware: [
        backchannelMiddleware({ events, anonymous, logger, pollInterval: config.approvalPollInterval }),
        tokenRecordsMiddleware({ tokens, records: new RecordWriter(knex, undefined, tokens, config.databaseTimeoutMs), events, anonymous, logger, issuedTokens }),
        errorDetailMiddleware(),
        tokenStatusMiddleware({ keys, tokens, agents, events, anonymous, logger, now }),
        discoveryMiddleware(() => ({
          jwks_uri: `${config.issuer}/jwks`,
          token_exchange_subject_token_types_supported: [...SUBJECT_TOKEN_TYPES_IN_USE],
          token_exchange_requested_token_types_supported: REQUESTED_TOKEN_TYPES,
          biscuit_revocation_list_uri: `${config.issuer}${BISCUIT_REVOCATIONS_PATH}`,
        })),
      ],
    }, keys);

    // Pending keys start signing at their time, here and (through the periodic refresh) on every other server.
    const activateNow = () => keys.activateDue().then((changed) => {
      if (changed) {
        oauth.reload();
        logger.info({ kids: keys.signingKeys().map((k) => k.kid) }, 'now signing with new keys');
      }
    }).catch((err: Error) => logger.warn({ err: { message: err.message } }, 'key refresh failed'));
    const pendingActivations = new Set<NodeJS.Timeout>();
    const scheduleActivation = (activateAt: number) => {
      const t = setTimeout(() => {
        pendingActivations.delete(t);
        void activateNow();
      }, Math.max(0, activateAt - now()) * 1000 + 50);
      t.unref();
      pendingActivations.add(t);
      return activateNow();
    };

    const registry = new AgentRegistry(knex, {
      trustDomain: config.trustDomain, maxDelegationDepth: config.maxDelegationDepth, trustedIssuers: config.trustedIssuers.map((i) => i.issuer),
    }, now, config.joinTokenTtl, (id) => agentsCache.invalidate(id), signals);

    const authenticator = new WorkloadAuthenticator({ issuer: config.issuer, keys, tokens, agents, replay, now });
    const witIssuer = new WitIssuer({
      issuer: config.issuer, ttl: config.witTtl, signingAlg: config.signingAlg, keys, agents, tokens, now,
      attestors: createAttestors({ joinTokens: new JoinTokensRepo(knex), trustedIssuers: externalJwts, authenticator, witEndpoint: `${config.issuer}/wit`, now }),
    });
    const decisions = new ApprovalDecisions({ approvals, provider: () => oauth.current, now });
    const app = createApp({
      logger, db, keys, oauth, trustProxy: config.trustProxy, throttle: anonymous.guard(),
      witClientAuth: witClientAuth({ authenticator, issuer: config.issuer, events, anonymous }),
      publicRouters: [witRoutes(witIssuer, events, anonymous), biscuitRevocationListRoutes(tokens, now), ssfRoutes(transmitter, ssfBearer(issuedTokens, config.issuer, events, anonymous)),
        approvalsRoutes({ approvals, decisions, auth: requireApprover({ approvers, adminHash, anonymous }), now }),
        approvalPageRoutes({ approvers, approvals, workflows, decisions, issuer: config.issuer, now, anonymous })],
      adminAuth: requireAdmin(adminHash),
      routers: [agentsRoutes(registry), keysRoutes(keys, events, config.keyActivationDelay, (activateAt) => scheduleActivation(activateAt), { issuer: config.issuer, signals }), tokensRoutes(tokens, events), biscuitAdminRoutes(tokens, events, now), auditRoutes(new AuditRepo(knex), logger),
        workflowsRoutes({ workflows, events, approvals, trustDomain: config.trustDomain, now }), approversRoutes(approvers)],
      ...(metrics ? { metrics: { metrics, token: config.metricsToken } } : {}),
    });

    server = createServer(app.callback());
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(config.port, config.host, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;

    const refreshMs = opts.keyRefreshMs ?? 10_000;
    if (refreshMs > 0) {
      timer = setInterval(() => void activateNow(), refreshMs);
      timer.unref();
    }
    // Approvals nobody answered are recorded as expired (with their events) within a minute of their expiry;
    // approvers' page sessions past their expiry are deleted.
    sweep = setInterval(() => {
      void approvals.expireOverdue(now()).catch((err: Error) => logger.warn({ err: { message: err.message } }, 'approval expiry sweep failed'));
      void approvers.endExpiredSessions(now()).catch((err: Error) => logger.warn({ err: { message: err.message } }, 'approver session sweep failed'));
    }, 60_000);
    sweep.unref();
    anonymous.start();

    // Events left in the outbox (a restart, a receiver that was down) are delivered from now on.
    await transmitter.start();
    logger.info({ issuer: config.issuer, port, database: db.kind, trust_domain: config.trustDomain }, 'agent-sts listening');
    const srv = server;
    const ssfTransmitter = transmitter;
    const counted = anonymous;
    return {
      url: `http://127.0.0.1:${port}`,
      port,
      db,
      keys,
      logger,
      async close() {
        if (timer) clearInterval(timer);
        if (sweep) clearInterval(sweep);
        for (const t of pendingActivations) clearTimeout(t);
        await ssfTransmitter.stop();
        await new Promise<void>((resolve) => {
          srv.close(() => resolve());
          srv.closeAllConnections();
        });
        // What was counted of this interval is written before the database closes.
        await counted.stop();
        await db.close();
      },
    };
  } catch (err) {
    if (timer) clearInterval(timer);
    await anonymous?.stop().catch(() => {});
    await transmitter?.stop();
    if (sweep) clearInterval(sweep);
    server?.close();
    await db.close();
    throw err;
  }
}
