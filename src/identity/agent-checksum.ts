import { createHash } from 'node:crypto';
import canonicalizeModule from 'canonicalize';

// A CommonJS module whose types describe an ES default export.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined;

/** What an agent is made of, for its checksum (Agentic JWT): its prompt, its tools and its configuration. */
export interface AgentDefinition {
  prompt: string;
  tools: { name: string; [k: string]: unknown }[];
  config?: unknown;
}

/**
 * `agent_checksum` = base64url(SHA-256(JCS(RFC 8785) of {"prompt", "tools" sorted by name, "config"})).
 * Agents and the server compute the same value from the same definition.
 */
export function computeAgentChecksum(def: AgentDefinition): string {
  const tools = [...def.tools].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const json = canonicalize({ prompt: def.prompt, tools, config: def.config ?? null });
  if (json === undefined) throw new TypeError('the agent definition cannot be canonicalized');
  return createHash('sha256').update(json, 'utf8').digest('base64url');
}

export const AGENT_CHECKSUM_PATTERN = /^[A-Za-z0-9_-]{43}$/;
