import { z } from 'zod';

/** How the guard decides which scopes a request needs. */
export interface ScopePolicy {
  /** Scope an MCP `tools/call` needs; `{name}` is the tool's name (default `tool:{name}`). */
  toolScope: string;
  /** Scopes per JSON-RPC method (e.g. `{"tools/list": []}`); methods not listed need `defaultScopes`. */
  methods: Record<string, string[]>;
  /** Scopes every request needs (default none). */
  defaultScopes: string[];
}

export const DEFAULT_POLICY: ScopePolicy = { toolScope: 'tool:{name}', methods: {}, defaultScopes: [] };

const policySchema = z.object({
  toolScope: z.string().min(1).optional(),
  methods: z.record(z.string(), z.array(z.string())).optional(),
  defaultScopes: z.array(z.string()).optional(),
}).strict();

/** Reads a policy file's JSON; throws with the reason when it is not a policy. */
export function parsePolicy(json: string): ScopePolicy {
  const parsed = policySchema.safeParse(JSON.parse(json));
  if (!parsed.success) throw new Error(`policy: ${parsed.error.issues[0]!.path.join('.')} ${parsed.error.issues[0]!.message}`);
  return { ...DEFAULT_POLICY, ...parsed.data } as ScopePolicy;
}

interface JsonRpcRequest {
  method?: unknown;
  params?: { name?: unknown };
}

/**
 * The scopes a request body needs under the policy: for MCP (JSON-RPC, single or batch), `tools/call`
 * needs the tool's scope, listed methods their scopes, everything else the default scopes.
 */
export function requiredScopes(policy: ScopePolicy, body: unknown): string[] {
  const calls = (Array.isArray(body) ? body : [body]).filter((c): c is JsonRpcRequest => !!c && typeof c === 'object');
  const scopes = new Set(policy.defaultScopes);
  for (const call of calls) {
    if (typeof call.method !== 'string') continue;
    if (call.method === 'tools/call' && typeof call.params?.name === 'string') {
      scopes.add(policy.toolScope.replace('{name}', call.params.name));
    } else {
      for (const s of policy.methods[call.method] ?? []) scopes.add(s);
    }
  }
  return [...scopes];
}
