import { z } from 'zod';
import { allowListEntryProblem } from '../events/push-target.js';

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
  /** True when ISSUER was not set and the issuer is the default, `http://localhost:<PORT>`. */
  issuerDefaulted?: boolean;
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
  /**
   * Refusals of unauthenticated requests, per source (client address): the bucket that throttles them (429)
   * and how they are recorded (one by one up to a share per interval, then counted).
   */
  anonymousRefusals: {
    /** Refusals a source may earn at once before it is answered 429 (0: never throttled). */
    burst: number;
    /** Refusals per minute a source earns back. */
    perMinute: number;
    /** Length of a counting interval (ms). */
    intervalMs: number;
    /** Refusals of one source recorded one by one per interval; the rest are counted. */
    recordedPerInterval: number;
  };
  /** Shared Signals transmitter: push retries, pausing, push endpoint rules, long polls. */
  ssf: {
    pushRetryMinMs: number;
    pushRetryMaxMs: number;
    pushPauseAfterSeconds: number;
    pushTimeoutMs: number;
    pushAllowHttp: 'localhost' | 'true' | 'false';
    /** Internal addresses push receivers may have nonetheless (IP addresses and CIDR ranges); every other must be public. */
    pushAllowAddresses: string[];
    pollMaxWaitMs: number;
    maxStreamsPerClient: number;
    /** Fewest seconds between a stream's verification requests (after a burst of 5); 0 for no limit. */
    minVerificationInterval: number;
  };
}

export class ConfigError extends Error {
  constructor(readonly variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

const DNS_LABELS = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * A whole number in decimal digits from min to max. Anything else (`abc`, `80.5`, `1e3`, `0x10`, spaces) is refused
 * in the project's words, naming the range, instead of coerced (zod's coercion reads `abc` as NaN and ` ` as 0).
 * `outOfRange` replaces the at-least/at-most wording where one phrase reads better (PORT: `must be 0-65535`).
 */
const integer = (min: number, max: number, outOfRange?: string) => z.string()
  .refine((v) => /^[+-]?\d+$/.test(v), `must be a whole number ${min}-${max}`)
  .transform((v) => Number(v))
  .pipe(z.number()
    .min(min, outOfRange ?? (min === 0 ? 'must be 0 or more' : `must be at least ${min}`))
    .max(max, outOfRange ?? `must be at most ${max}`));

const positiveInt = (max: number) => integer(1, max);

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

/** Where in a JSON value an issue is, as `[0].jwks_uri`. */
function jsonPath(path: readonly PropertyKey[]): string {
  return path.map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`)).join('').replace(/^\./, '');
}

/** One issue of a JSON-valued variable in the project's words (zod's own read "Invalid input: expected ..."). */
function describeJsonIssue(issue: z.core.$ZodIssue, value: unknown): string {
  const at = jsonPath(issue.path);
  const where = at ? `${at}: ` : '';
  const found = issue.path.reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined), value);
  if ((issue.code === 'invalid_type' || issue.code === 'invalid_union') && found === undefined) return `${at || 'value'}: is required`;
  switch (issue.code) {
    case 'invalid_type':
      return `${where}must be ${issue.expected === 'array' || issue.expected === 'object' ? 'an' : 'a'} ${issue.expected}`;
    case 'unrecognized_keys':
      return `${where}unknown member${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    case 'too_small':
      return `${where}must not be empty`;
    case 'invalid_union':
      return `${where}must be a string or an array of strings`;
    default:
      return `${where}${issue.message}`;
  }
}

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
    if (!Array.isArray(parsed)) {
      ctx.addIssue({ code: 'custom', message: `must be a JSON array of ${shape}` });
      return z.NEVER;
    }
    const result = schema.safeParse(parsed);
    if (!result.success) {
      ctx.addIssue({ code: 'custom', message: describeJsonIssue(result.error.issues[0]!, parsed) });
      return z.NEVER;
    }
    return result.data;
  });
}

const schema = z.object({
  // Unset: http://localhost:<PORT> (see loadConfig).
  ISSUER: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
    .refine((v) => { const u = URL.parse(v); return !u || (!u.search && !u.hash); }, 'must not have a query or fragment')
    .refine((v) => { const u = URL.parse(v); return !u || u.pathname === '/'; }, 'must not have a path: serve agent-sts at the root of its origin')
    .transform((v) => v.replace(/\/$/, ''))
    .optional(),
  PORT: integer(0, 65535, 'must be 0-65535').default(8080),
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
  KEY_ACTIVATION_DELAY: integer(0, 86_400).default(0),
  SIGNING_ALG: z.enum(['EdDSA', 'ES256'], { error: 'must be EdDSA or ES256' }).default('EdDSA'),
  MAX_DELEGATION_DEPTH: positiveInt(32).default(5),
  WIT_TTL: integer(60, 86_400).default(3600),
  TXN_TOKEN_TTL: integer(1, 3600).default(300),
  BISCUIT_TTL: integer(1, 86400).default(300),
  MAX_TXN_TOKENS_PER_TXN: positiveInt(1000).default(20),
  JOIN_TOKEN_TTL: integer(10, 86_400).default(600),
  APPROVAL_TTL: integer(10, 86_400).default(600),
  APPROVAL_POLL_INTERVAL: integer(1, 60).default(5),
  TRUSTED_ISSUERS: jsonVariable(trustedIssuers, '{issuer, jwks_uri | jwks, audience}'),
  PARTNER_DOMAINS: jsonVariable(partnerDomains, '{issuer, jwks_uri | jwks, subject_map, subject_prefixes}'),
  DATABASE_POOL_MAX: positiveInt(200).default(10),
  DATABASE_TIMEOUT_MS: integer(100, 60_000).default(3000),
  // Applied by `npm start` and the image as node's --heap-growing-percent (before any of this runs; empty means
  // the default there too); checked here so a value V8 would take but no one means (0, negative) stops the server.
  HEAP_GROWING_PERCENT: z.preprocess((v) => (v === '' ? undefined : v), positiveInt(1000).optional()),
  AGENT_CACHE_TTL_MS: integer(0, 60_000).default(1000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'must be one of fatal, error, warn, info, debug, trace, silent' }).default('info'),
  TRUST_PROXY: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
  SIGN_ON_THREAD_POOL: z.enum(['true', 'false'], { error: 'must be true or false' }).default('false'),
  METRICS_ENABLED: z.enum(['true', 'false'], { error: 'must be true or false' }).default('true'),
  METRICS_TOKEN: z.string().optional()
    .transform((v) => (v === '' ? undefined : v))
    .refine((v) => v === undefined || v.length >= 32, 'must be at least 32 characters')
    .refine((v) => v === undefined || /^[\x21-\x7E]+$/.test(v), 'must be printable ASCII without spaces'),
  ANONYMOUS_REFUSAL_BURST: integer(0, 1_000_000).default(300),
  ANONYMOUS_REFUSAL_RATE: positiveInt(1_000_000).default(120),
  ANONYMOUS_REFUSAL_INTERVAL: positiveInt(3600).default(60),
  ANONYMOUS_REFUSALS_RECORDED: integer(0, 100_000).default(20),
  SSF_PUSH_RETRY_MIN_MS: integer(10, 600_000).default(1000),
  SSF_PUSH_RETRY_MAX_MS: integer(10, 86_400_000).default(300_000),
  SSF_PUSH_PAUSE_AFTER: positiveInt(30 * 86_400).default(86_400),
  SSF_PUSH_TIMEOUT_MS: integer(100, 60_000).default(10_000),
  SSF_PUSH_ALLOW_HTTP: z.enum(['localhost', 'true', 'false'], { error: 'must be localhost, true or false' }).default('localhost'),
  SSF_PUSH_ALLOW_ADDRESSES: z.string().default('')
    .transform((v) => v.split(',').map((e) => e.trim()).filter((e) => e !== ''))
    .superRefine((entries, ctx) => {
      for (const e of entries) {
        const problem = allowListEntryProblem(e);
        if (problem) ctx.addIssue({ code: 'custom', message: `${problem} (give IP addresses and CIDR ranges separated by commas)` });
      }
    }),
  SSF_POLL_MAX_WAIT_MS: integer(0, 25_000).default(20_000),
  SSF_MAX_STREAMS_PER_CLIENT: positiveInt(1000).default(10),
  SSF_MIN_VERIFICATION_INTERVAL: integer(0, 86_400).default(10),
});

function decodeKey(value: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, 'hex');
  const buf = Buffer.from(value, value.includes('-') || value.includes('_') ? 'base64url' : 'base64');
  return buf.length === 32 ? buf : undefined;
}

/** Reads and validates the configuration; throws a {@link ConfigError} naming the first bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // An empty value is the same as an unset one (`PORT=` in a compose file or a shell script means "the default").
  const set = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = schema.safeParse(set);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(String(issue.path[0] ?? 'environment'), issue.message);
  }
  const v = parsed.data;
  return {
    issuer: v.ISSUER ?? `http://localhost:${v.PORT}`,
    issuerDefaulted: v.ISSUER === undefined,
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
    anonymousRefusals: {
      burst: v.ANONYMOUS_REFUSAL_BURST,
      perMinute: v.ANONYMOUS_REFUSAL_RATE,
      intervalMs: v.ANONYMOUS_REFUSAL_INTERVAL * 1000,
      recordedPerInterval: v.ANONYMOUS_REFUSALS_RECORDED,
    },
    ssf: {
      pushRetryMinMs: v.SSF_PUSH_RETRY_MIN_MS,
      pushRetryMaxMs: Math.max(v.SSF_PUSH_RETRY_MIN_MS, v.SSF_PUSH_RETRY_MAX_MS),
      pushPauseAfterSeconds: v.SSF_PUSH_PAUSE_AFTER,
      pushTimeoutMs: v.SSF_PUSH_TIMEOUT_MS,
      pushAllowHttp: v.SSF_PUSH_ALLOW_HTTP,
      pushAllowAddresses: v.SSF_PUSH_ALLOW_ADDRESSES,
      pollMaxWaitMs: v.SSF_POLL_MAX_WAIT_MS,
      maxStreamsPerClient: v.SSF_MAX_STREAMS_PER_CLIENT,
      minVerificationInterval: v.SSF_MIN_VERIFICATION_INTERVAL,
    },
  };
}
