import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

/** A command-line refusal: the message and the exit code (2 for usage, 1 for a refused request). */
export class CliError extends Error {
  constructor(message: string, readonly code: 1 | 2) {
    super(message);
  }
}

interface Target {
  url: string;
  adminToken: string | undefined;
}

/** Where the server is and the admin token: --url / AGENT_STS_URL, --admin-token / AGENT_STS_ADMIN_TOKEN / DATA_DIR/admin-token. */
function target(values: { url?: string; 'admin-token'?: string }, env: NodeJS.ProcessEnv): Target {
  const url = (values.url ?? env.AGENT_STS_URL ?? env.ISSUER ?? 'http://localhost:8080').replace(/\/$/, '');
  let adminToken = values['admin-token'] ?? env.AGENT_STS_ADMIN_TOKEN;
  if (!adminToken) {
    try {
      adminToken = readFileSync(join(env.DATA_DIR ?? './data', 'admin-token'), 'utf8').trim();
    } catch { /* not on this machine */ }
  }
  return { url, adminToken };
}

async function call(t: Target, method: string, path: string, body?: unknown): Promise<unknown> {
  if (!t.adminToken) throw new CliError('no admin token: pass --admin-token, set AGENT_STS_ADMIN_TOKEN, or run where DATA_DIR/admin-token is', 2);
  let res: Response;
  try {
    res = await fetch(`${t.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${t.adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    throw new CliError(`cannot reach ${t.url}: ${(err as Error).message}`, 1);
  }
  const parsed = await res.json().catch(() => undefined) as { error?: string; error_description?: string } | undefined;
  if (!res.ok) throw new CliError(`${res.status} ${parsed?.error ?? ''}: ${parsed?.error_description ?? res.statusText}`, 1);
  return parsed;
}

const COMMON = { url: { type: 'string' }, 'admin-token': { type: 'string' } } as const;

function parse<T extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options: { ...COMMON, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CliError((err as Error).message, 2);
  }
}

/** `agents add|list|show|disable` */
export async function agentsCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, {
    id: { type: 'string' }, scope: { type: 'string', multiple: true }, audience: { type: 'string', multiple: true },
    'auth-method': { type: 'string' }, json: { type: 'string' }, status: { type: 'string' },
  });
  const t = target(values, env);
  const id = values.id ?? positionals[0];
  switch (sub) {
    case 'add': {
      let extra: Record<string, unknown> = {};
      if (values.json) {
        try {
          extra = JSON.parse(values.json) as Record<string, unknown>;
        } catch {
          throw new CliError('--json must be a JSON object', 2);
        }
      }
      if (!id && !extra.id) throw new CliError('agents add needs --id spiffe://<trust-domain>/<path>', 2);
      return call(t, 'POST', '/admin/agents', {
        ...extra, ...(id ? { id } : {}), ...(values.scope ? { scopes: values.scope } : {}), ...(values.audience ? { audiences: values.audience } : {}),
        ...(values['auth-method'] ? { token_endpoint_auth_method: values['auth-method'] } : {}),
      });
    }
    case 'list':
      return call(t, 'GET', `/admin/agents${values.status ? `?status=${encodeURIComponent(values.status)}` : ''}`);
    case 'show':
    case 'disable':
      if (!id) throw new CliError(`agents ${sub} needs the agent id`, 2);
      return call(t, sub === 'show' ? 'GET' : 'DELETE', `/admin/agents/${encodeURIComponent(id)}`);
    default:
      throw new CliError('usage: agent-sts agents add|list|show|disable ...', 2);
  }
}

/** `keys list|rotate` */
export async function keysCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const [sub, ...rest] = args;
  const { values } = parse(rest, {});
  const t = target(values, env);
  if (sub === 'list') return call(t, 'GET', '/admin/keys');
  if (sub === 'rotate') return call(t, 'POST', '/admin/keys/rotate');
  throw new CliError('usage: agent-sts keys list|rotate', 2);
}

/** `token --id ID --secret SECRET [--scope S] [--resource R]`: client credentials, for trying things. */
export async function tokenCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const { values } = parse(args, { id: { type: 'string' }, secret: { type: 'string' }, scope: { type: 'string' }, resource: { type: 'string' } });
  if (!values.id || !values.secret) throw new CliError('usage: agent-sts token --id ID --secret SECRET [--scope S] [--resource R]', 2);
  const { url } = target(values, env);
  const form = new URLSearchParams({ grant_type: 'client_credentials', ...(values.scope ? { scope: values.scope } : {}), ...(values.resource ? { resource: values.resource } : {}) });
  let res: Response;
  try {
    res = await fetch(`${url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${encodeURIComponent(values.id)}:${encodeURIComponent(values.secret)}`).toString('base64')}` },
      body: form.toString(),
    });
  } catch (err) {
    throw new CliError(`cannot reach ${url}: ${(err as Error).message}`, 1);
  }
  const body = await res.json().catch(() => undefined) as { error?: string; error_description?: string } | undefined;
  if (!res.ok) throw new CliError(`${res.status} ${body?.error ?? ''}: ${body?.error_description ?? res.statusText}`, 1);
  return body;
}

/** `decode TOKEN`: header and claims of any of our JWTs, unverified. */
export function decodeCommand(args: string[]): unknown {
  const token = args[0];
  const parts = token?.split('.');
  if (!token || parts!.length !== 3) throw new CliError('usage: agent-sts decode <JWT>  (prints header and claims, without verifying)', 2);
  try {
    const [header, claims] = parts!.slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>);
    return { header, claims, verified: false };
  } catch {
    throw new CliError('not a JWT: its header or claims are not base64url JSON', 1);
  }
}

/** `verify TOKEN --audience A [--issuer URL] [--trust-domain D]`: checks a token as a resource server would. */
export async function verifyCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const { values, positionals } = parse(args, { audience: { type: 'string' }, issuer: { type: 'string' }, 'trust-domain': { type: 'string' } });
  const token = positionals[0];
  if (!token) throw new CliError('usage: agent-sts verify <token> --audience A [--issuer URL] [--trust-domain D]', 2);
  const issuer = (values.issuer ?? target(values, env).url).replace(/\/$/, '');
  const { Verifier, VerificationError } = await import('../verifier/index.js');
  const typ = (() => {
    try {
      return (JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as { typ?: string }).typ;
    } catch {
      return undefined;
    }
  })();
  const isTxn = typ === 'txntoken+jwt';
  if (!isTxn && !values.audience) throw new CliError('verify needs --audience (the resource the token is for)', 2);
  const verifier = new Verifier({ issuer, audience: values.audience ?? '', ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}) });
  try {
    const result = isTxn
      ? await verifier.verifyTxnToken(token)
      : await verifier.verifyAccessToken({ authorization: `Bearer ${token}`, method: 'GET', url: values.audience! });
    return { valid: true, ...result };
  } catch (err) {
    if (err instanceof VerificationError) throw new CliError(`invalid: ${err.message}`, 1);
    throw new CliError(`cannot verify: ${(err as Error).message}`, 1);
  }
}
