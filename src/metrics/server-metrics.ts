import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Database } from '../storage/database.js';
import { biscuitInstance } from '../tokens/biscuit-wasm.js';
import type { RecordObserver } from '../storage/record-observer.js';
import { ActionLabel, BoundedLabel, methodLabel, statusClass } from './labels.js';

/** The parts of a tarn pool (knex's) we read; absent until knex opens its first connection. */
interface PoolStats {
  max: number;
  numUsed(): number;
  numFree(): number;
  numPendingAcquires(): number;
  numPendingCreates(): number;
}

let processRegistry: Registry | undefined;

/** Process metrics (CPU, memory, event loop, GC) are per process: collected once, shared by every server. */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
    const registers = [processRegistry];
    new Gauge({
      name: 'agent_sts_biscuit_wasm_memory_bytes', registers,
      help: 'Linear memory of the current Biscuit WebAssembly instance; a fresh instance replaces it past BISCUIT_INSTANCE_MAX_BYTES, and replaced ones count in the resident set until they are garbage-collected.',
      collect() {
        this.set(biscuitInstance()?.memoryBytes ?? 0);
      },
    });
    new Gauge({
      name: 'agent_sts_biscuit_wasm_instance', registers,
      help: 'Sequence number of the current Biscuit WebAssembly instance (1 for the first; 0 before any): it rises by one each time one is replaced.',
      collect() {
        this.set(biscuitInstance()?.number ?? 0);
      },
    });
  }
  return processRegistry;
}

/**
 * One server's metrics, in a registry of its own (several servers may run in one process). It observes
 * the records storage writes: issued tokens by type, refusals by action and reason.
 */
export class ServerMetrics implements RecordObserver {
  readonly registry = new Registry();
  private readonly tokensIssued: Counter<'type'>;
  private readonly refusals: Counter<'action' | 'reason'>;
  private readonly latency: Histogram<'route' | 'method' | 'status_class'>;
  private readonly secretHashes: Counter;
  private readonly tokenType = new BoundedLabel({ max: 16 });
  private readonly reason = new BoundedLabel({ max: 64 });
  private readonly action: ActionLabel;
  private readonly route = new BoundedLabel({ max: 128, pattern: /^(\/[\x21-\x7E]{0,200}|unmatched)$/ });

  constructor(opts: { db: Database; grantTypes: readonly string[]; outboxBacklog?: () => Promise<number | undefined> }) {
    const registers = [this.registry];
    this.action = new ActionLabel(new Set(opts.grantTypes));
    this.tokensIssued = new Counter({
      name: 'agent_sts_tokens_issued_total',
      help: 'Tokens issued, counted once their record is committed, by token type (access_token, txn_token, wit, jwt_grant).',
      labelNames: ['type'], registers,
    });
    this.refusals = new Counter({
      name: 'agent_sts_refusals_total',
      help: 'Refused requests, by action (token:<grant type>, wit, client_auth:<path>, revocation) and reason (the OAuth error code).',
      labelNames: ['action', 'reason'], registers,
    });
    this.secretHashes = new Counter({
      name: 'agent_sts_client_secret_hashes_total',
      help: 'Client secrets checked with the slow hash (scrypt): a secret not yet verified since the start; concurrent checks of one secret count once.',
      registers,
    });
    this.latency = new Histogram({
      name: 'agent_sts_http_request_duration_seconds',
      help: 'HTTP request duration until the response is sent, by route pattern, method and status class.',
      labelNames: ['route', 'method', 'status_class'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    const pool = () => (opts.db.knex.client as { pool?: PoolStats }).pool;
    const poolGauge = (name: string, help: string, read: (p: PoolStats) => number) => new Gauge({
      name, help, registers,
      collect() {
        const p = pool();
        this.set(p ? read(p) : 0);
      },
    });
    poolGauge('agent_sts_db_pool_used_connections', 'Database connections in use.', (p) => p.numUsed());
    poolGauge('agent_sts_db_pool_free_connections', 'Database connections open and idle.', (p) => p.numFree());
    poolGauge('agent_sts_db_pool_pending_acquires', 'Queries waiting for a database connection.', (p) => p.numPendingAcquires() + p.numPendingCreates());
    poolGauge('agent_sts_db_pool_max_connections', 'Size of the database connection pool (1 for the embedded database).', (p) => p.max);
    new Gauge({ name: 'agent_sts_db_info', help: 'The database in use: postgres or embedded (PGlite, one connection).', labelNames: ['kind'], registers })
      .set({ kind: opts.db.kind }, 1);
    const backlog = opts.outboxBacklog;
    new Gauge({
      name: 'agent_sts_outbox_backlog',
      help: 'Security events (Shared Signals SETs) in the outbox not yet delivered to or acknowledged by their stream\'s receiver, over all streams.',
      registers,
      async collect() {
        // While the database can't be reached, or does not answer at once, the last value stays.
        if (!backlog) return;
        try {
          const n = await backlog();
          if (n !== undefined) this.set(n);
        } catch { /* unchanged */ }
      },
    });
  }

  tokenRecorded(type: string): void {
    this.tokensIssued.inc({ type: this.tokenType.value(type) });
  }

  decisionRecorded(event: { decision: string; action: string; reason?: string | null }): void {
    if (event.decision !== 'refused') return;
    this.refusals.inc({ action: this.action.value(event.action), reason: this.reason.value(event.reason) });
  }

  /** One client secret checked with the slow hash. */
  clientSecretHashed(): void {
    this.secretHashes.inc();
  }

  /** Records one request; `route` is the route pattern, never the path itself. */
  requestDone(route: string, method: string, status: number, seconds: number): void {
    this.latency.observe({ route: this.route.value(route), method: methodLabel(method), status_class: statusClass(status) }, seconds);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text: this server's metrics and the process's. */
  async text(): Promise<string> {
    return Registry.merge([processMetrics(), this.registry]).metrics();
  }
}
