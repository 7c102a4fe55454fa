import { z } from 'zod';

/**
 * The server's configuration, read from the environment once at start.
 * This is the only module that reads `process.env` for settings.
 */
/** An external issuer whose JWTs are trusted for attestation (a Kubernetes cluster, a CI system). */
export interface TrustedIssuer {
  issuer: string;
  jwks_uri?: string;
  jwks?: { keys: Record<string, unknown>[] };
  audience: string | string[];
}

/** A partner trust domain's authorization server, for identity chaining in both directions. */
export interface PartnerDomain {
  issuer: string;
  jwks_uri?: string;
  jwks?: { keys: Record<string, unknown>[] };
  /** Partner subjects mapped to local ones: exact matches first, then the first matching prefix. */
  subject_map?: Record<string, string>;
  subject_prefixes?: { from: string; to: string }[];
}

export interface Config {
  issuer: string;
  port: number;
  host: string;
  trustDomain: string;
  databaseUrl: string | undefined;
  dataDir: string;
  adminToken: string | undefined;
  keyEncryptionKey: Buffer | undefined;
  accessTokenTtl: number;
  signingAlg: 'EdDSA' | 'ES256';
  keyActivationDelay: number;
  maxDelegationDepth: number;
  witTtl: number;
  txnTokenTtl: number;
  /** Lifetime of a Biscuit minted by token exchange (seconds; never beyond its subject token). */
  biscuitTtl: number;
  maxTxnTokensPerTxn: number;
  joinTokenTtl: number;
  /** Lifetime of a request for human approval of a workflow step (CIBA; seconds). */
  approvalTtl: number;
  /** Minimum seconds between an agent's polls of a pending approval. */
  approvalPollInterval: number;
  trustedIssuers: TrustedIssuer[];
  partnerDomains: PartnerDomain[];
  databasePoolMax: number;
  /**
   * The longest a request waits on the database: for a connection, for each query's answer, for its token's record
   * to commit. Past it the request is answered 503 temporarily_unavailable.
   */
  databaseTimeoutMs: number;
  agentCacheTtlMs: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  trustProxy: boolean;
  /** Sign tokens on libuv's thread pool instead of the event loop. */
  signOnThreadPool: boolean;
  /** Serve `GET /metrics` (Prometheus text format). */
  metricsEnabled: boolean;
  /** When set, `/metrics` requires `Authorization: Bearer <this>`. */
  metricsToken: string | undefined;
  /** Shared Signals transmitter: push retries, pausing, push endpoint rules, long polls. */
  ssf: {
    pushRetryMinMs: number;
    pushRetryMaxMs: number;
    pushPauseAfterSeconds: number;
    pushTimeoutMs: number;
    pushAllowHttp: 'localhost' | 'true' | 'false';
    pollMaxWaitMs: number;
    maxStreamsPerClient: number;
  };
}

export class ConfigError extends Error {
  constructor(readonly variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

const DNS_LABELS = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

const positiveInt = (max: number) => z.coerce.number().int('must be a whole number').min(1, 'must be at least 1').max(max, `must be at most ${max}`);

const httpsOrLocalUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });
const trustedIssuers = z.array(z.object({
  issuer: z.string().min(1),
  jwks_uri: httpsOrLocalUrl.optional(),
  jwks: z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) }).optional(),
  audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
}).strict().refine((i) => !!i.jwks_uri !== !!i.jwks, 'give exactly one of jwks_uri and jwks'))
  .refine((a) => new Set(a.map((i) => i.issuer)).size === a.length, 'issuers must be unique');

const partnerDomains = z.array(z.object({
  issuer: z.string().min(1),
  jwks_uri: httpsOrLocalUrl.optional(),
  jwks: z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) }).optional(),
  subject_map: z.record(z.string(), z.string()).optional(),
  subject_prefixes: z.array(z.object({ from: z.string().min(1), to: z.string().min(1) }).strict()).optional(),
}).strict().refine((i) => !!i.jwks_uri !== !!i.jwks, 'give exactly one of jwks_uri and jwks'))
  .refine((a) => new Set(a.map((i) => i.issuer)).size === a.length, 'issuers must be unique');

/** A JSON-valued variable parsed with a schema. */
function jsonVariable<T>(schema: z.ZodType<T>, shape: string) {
  return z.string().default('[]').transform((v, ctx): T => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(v || '[]');
    } catch {
      ctx.addIssue({ code: 'custom', message: `must be a JSON array of ${shape}` });
      return z.NEVER;
    }
    const result = schema.safeParse(parsed);
    if (!result.success) {
      const issue = result.error.issues[0]!;
      ctx.addIssue({ code: 'custom', message: `${issue.path.join('.') || 'value'}: ${issue.message}` });
      return z.NEVER;
    }
    return result.data;
  });
}

const schema = z.object({
  ISSUER: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
    .default('http://localhost:8080')
    .refine((v) => { const u = URL.parse(v); return !u || (!u.search && !u.hash); }, 'must not have a query or fragment')
    .refine((v) => { const u = URL.parse(v); return !u || u.pathname === '/'; }, 'must not have a path: serve agent-sts at the root of its origin')
    .transform((v) => v.replace(/\/$/, '')),
  PORT: z.coerce.number().int('must be a whole number').min(0, 'must be 0-65535').max(65535, 'must be 0-65535').default(8080),
  HOST: z.string().min(1).default('0.0.0.0'),
  TRUST_DOMAIN: z.string().regex(DNS_LABELS, 'must be a lower-case DNS name such as example.org').default('agent-sts.local'),
  DATABASE_URL: z.string().optional()
    .transform((v) => (v === '' ? undefined : v))
    .refine((v) => v === undefined || /^postgres(ql)?:\/\//.test(v), 'must be a postgres:// URL (leave unset for the embedded database)'),
  DATA_DIR: z.string().min(1).default('./data'),
  AGENT_STS_ADMIN_TOKEN: z.string().optional()
    .transform((v) => (v === '' ? undefined : v))
    .refine((v) => v === undefined || v.length >= 32, 'must be at least 32 characters'),
  AGENT_STS_KEY_ENCRYPTION_KEY: z.string().optional()
    .transform((v) => (v === '' ? undefined : v))
    .refine((v) => v === undefined || decodeKey(v) !== undefined, 'must be 32 bytes, as 64 hex characters or base64/base64url'),
  ACCESS_TOKEN_TTL: positiveInt(86_400).default(300),
  KEY_ACTIVATION_DELAY: z.coerce.number().int('must be a whole number').min(0, 'must be 0 or more').max(86_400, 'must be at most 86400').default(0),
  SIGNING_ALG: z.enum(['EdDSA', 'ES256'], { error: 'must be EdDSA or ES256' }).default('EdDSA'),
  MAX_DELEGATION_DEPTH: positiveInt(32).default(5),
  WIT_TTL: z.coerce.number().int('must be a whole number').min(60, 'must be at least 60').max(86_400, 'must be at most 86400').default(3600),
  TXN_TOKEN_TTL: z.coerce.number().int('must be a whole number').min(1, 'must be at least 1').max(3600, 'must be at most 3600').default(300),
  BISCUIT_TTL: z.coerce.number().int('must be a whole number').min(1, 'must be at least 1').max(86400, 'must be at most 86400').default(300),
  MAX_TXN_TOKENS_PER_TXN: positiveInt(1000).default(20),
  JOIN_TOKEN_TTL: z.coerce.number().int('must be a whole number').min(10, 'must be at least 10').max(86_400, 'must be at most 86400').default(600),
  APPROVAL_TTL: z.coerce.number().int('must be a whole number').min(10, 'must be at least 10').max(86_400, 'must be at most 86400').default(600),
  APPROVAL_POLL_INTERVAL: z.coerce.number().int('must be a whole number').min(1, 'must be at least 1').max(60, 'must be at most 60').default(5),
  TRUSTED_ISSUERS: jsonVariable(trustedIssuers, '{issuer, jwks_uri | jwks, audience}'),
  PARTNER_DOMAINS: jsonVariable(partnerDomains, '{issuer, jwks_uri | jwks, subject_map, subject_prefixes}'),
  DATABASE_POOL_MAX: positiveInt(200).default(10),
  DATABASE_TIMEOUT_MS: z.coerce.number().int('must be a whole number').min(100, 'must be at least 100').max(60_000, 'must be at most 60000').default(3000),
  // Applied by `npm start` and the image as node's --heap-growing-percent (before any of this runs; empty means
  // the default there too); checked here so a value V8 would take but no one means (0, negative) stops the server.
  HEAP_GROWING_PERCENT: z.preprocess((v) => (v === '' ? undefined : v), positiveInt(1000).optional()),
  AGENT_CACHE_TTL_MS: z.coerce.number().int('must be a whole number').min(0, 'must be 0 or more').max(60_000, 'must be at most 60000').default(1000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'must be one of fatal, error, warn, info, debug, trace, silent' }).default('info'),
  TRUST_PROXY: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
  SIGN_ON_THREAD_POOL: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
  METRICS_ENABLED: z.enum(['true', 'false'], { error: 'must be true or false' }).default('true'),
  METRICS_TOKEN: z.string().optional()
    .transform((v) => (v === '' ? undefined : v))
    .refine((v) => v === undefined || v.length >= 32, 'must be at least 32 characters')
    .refine((v) => v === undefined || /^[\x21-\x7E]+$/.test(v), 'must be printable ASCII without spaces'),
  SSF_PUSH_RETRY_MIN_MS: z.coerce.number().int('must be a whole number').min(10, 'must be at least 10').max(600_000, 'must be at most 600000').default(1000),
  SSF_PUSH_RETRY_MAX_MS: z.coerce.number().int('must be a whole number').min(10, 'must be at least 10').max(86_400_000, 'must be at most 86400000').default(300_000),
  SSF_PUSH_PAUSE_AFTER: positiveInt(30 * 86_400).default(86_400),
  SSF_PUSH_TIMEOUT_MS: z.coerce.number().int('must be a whole number').min(100, 'must be at least 100').max(60_000, 'must be at most 60000').default(10_000),
  SSF_PUSH_ALLOW_HTTP: z.enum(['localhost', 'true', 'false'], { error: 'must be localhost, true or false' }).default('localhost'),
  SSF_POLL_MAX_WAIT_MS: z.coerce.number().int('must be a whole number').min(0, 'must be 0 or more').max(25_000, 'must be at most 25000').default(20_000),
  SSF_MAX_STREAMS_PER_CLIENT: positiveInt(1000).default(10),
});

function decodeKey(value: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, 'hex');
  const buf = Buffer.from(value, value.includes('-') || value.includes('_') ? 'base64url' : 'base64');
  return buf.length === 32 ? buf : undefined;
}

/** Reads and validates the configuration; throws a {@link ConfigError} naming the first bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(String(issue.path[0] ?? 'environment'), issue.message);
  }
  const v = parsed.data;
  return {
    issuer: v.ISSUER,
    port: v.PORT,
    host: v.HOST,
    trustDomain: v.TRUST_DOMAIN,
    databaseUrl: v.DATABASE_URL,
    dataDir: v.DATA_DIR,
    adminToken: v.AGENT_STS_ADMIN_TOKEN,
    keyEncryptionKey: v.AGENT_STS_KEY_ENCRYPTION_KEY ? decodeKey(v.AGENT_STS_KEY_ENCRYPTION_KEY) : undefined,
    accessTokenTtl: v.ACCESS_TOKEN_TTL,
    signingAlg: v.SIGNING_ALG,
    keyActivationDelay: v.KEY_ACTIVATION_DELAY,
    maxDelegationDepth: v.MAX_DELEGATION_DEPTH,
    witTtl: v.WIT_TTL,
    txnTokenTtl: v.TXN_TOKEN_TTL,
    biscuitTtl: v.BISCUIT_TTL,
    maxTxnTokensPerTxn: v.MAX_TXN_TOKENS_PER_TXN,
    joinTokenTtl: v.JOIN_TOKEN_TTL,
    approvalTtl: v.APPROVAL_TTL,
    approvalPollInterval: v.APPROVAL_POLL_INTERVAL,
    trustedIssuers: v.TRUSTED_ISSUERS,
    partnerDomains: v.PARTNER_DOMAINS,
    databasePoolMax: v.DATABASE_POOL_MAX,
    databaseTimeoutMs: v.DATABASE_TIMEOUT_MS,
    agentCacheTtlMs: v.AGENT_CACHE_TTL_MS,
    logLevel: v.LOG_LEVEL,
    trustProxy: v.TRUST_PROXY === 'true',
    signOnThreadPool: v.SIGN_ON_THREAD_POOL === 'true',
    metricsEnabled: v.METRICS_ENABLED === 'true',
    metricsToken: v.METRICS_TOKEN,
    ssf: {
      pushRetryMinMs: v.SSF_PUSH_RETRY_MIN_MS,
      pushRetryMaxMs: Math.max(v.SSF_PUSH_RETRY_MIN_MS, v.SSF_PUSH_RETRY_MAX_MS),
      pushPauseAfterSeconds: v.SSF_PUSH_PAUSE_AFTER,
      pushTimeoutMs: v.SSF_PUSH_TIMEOUT_MS,
      pushAllowHttp: v.SSF_PUSH_ALLOW_HTTP,
      pollMaxWaitMs: v.SSF_POLL_MAX_WAIT_MS,
      maxStreamsPerClient: v.SSF_MAX_STREAMS_PER_CLIENT,
    },
  };
}
