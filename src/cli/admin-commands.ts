import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CliError, describeThrown } from './cli-error.js';
import { COMMANDS, usageOf, type CommandHelp } from './commands.js';
import { parseCommand } from './parse.js';
import { decodeBiscuit, isBiscuit, verifyBiscuitToken } from './biscuit-commands.js';
import { clientSecretBasic } from '../verifier/client-credentials.js';

export { CliError };

interface Target {
  url: string;
  adminToken: string | undefined;
}

/** Where the server is and the admin token: --url / AGENT_STS_URL, --admin-token / AGENT_STS_ADMIN_TOKEN / DATA_DIR/admin-token. */
function target(values: { url?: string; 'admin-token'?: string }, env: NodeJS.ProcessEnv): Target {
  // As the server finds its issuer: ISSUER, else http://localhost:<PORT> (an empty value is an unset one).
  const url = (values.url || env.AGENT_STS_URL || env.ISSUER || `http://localhost:${env.PORT || 8080}`).replace(/\/$/, '');
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
    throw new CliError(`cannot reach ${t.url}: ${describeThrown(err)}`, 1);
  }
  const parsed = await res.json().catch(() => undefined) as { error?: string; error_description?: string } | undefined;
  if (!res.ok) throw new CliError(`${res.status} ${parsed?.error ?? ''}: ${parsed?.error_description ?? res.statusText}`, 1);
  return parsed;
}

const COMMON = { url: { type: 'string' }, 'admin-token': { type: 'string' } } as const;

/**
 * The command's options (with --url and --admin-token) by node's parseArgs: `--help` throws the usage of the
 * command, or of the subcommand the first positional names; an unknown option exits 2.
 */
function parse<T extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>(command: 'agents' | 'keys' | 'token' | 'decode' | 'verify', args: string[], options: T) {
  const subcommands: Record<string, string> | undefined = (COMMANDS[command] as CommandHelp).subcommands;
  const sub = args.find((a) => !a.startsWith('-'));
  const label = sub !== undefined && subcommands && Object.hasOwn(subcommands, sub) ? `${command} ${sub}` : command;
  return parseCommand(label, args, { ...COMMON, ...options }, (positionals) => usageOf(command, positionals[0]));
}

/** `agents add|list|show|disable` */
export async function agentsCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const { values, positionals: [sub, ...rest] } = parse('agents', args, {
    id: { type: 'string' }, scope: { type: 'string', multiple: true }, audience: { type: 'string', multiple: true },
    'auth-method': { type: 'string' }, json: { type: 'string' }, status: { type: 'string' },
  });
  const t = target(values, env);
  const id = values.id ?? rest[0];
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
      throw new CliError(`${sub === undefined ? 'agents needs a subcommand' : `agents: unknown subcommand ${JSON.stringify(sub)}`}: add, list, show or disable; see agent-sts agents --help`, 2);
  }
}

/** `keys list|rotate` */
export async function keysCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const { values, positionals: [sub] } = parse('keys', args, {});
  const t = target(values, env);
  if (sub === 'list') return call(t, 'GET', '/admin/keys');
  if (sub === 'rotate') return call(t, 'POST', '/admin/keys/rotate');
  throw new CliError(`${sub === undefined ? 'keys needs a subcommand' : `keys: unknown subcommand ${JSON.stringify(sub)}`}: list or rotate; see agent-sts keys --help`, 2);
}

/**
 * `token --id ID --secret=SECRET [--scope S] [--resource R]`: client credentials, for trying things. The secret may
 * come from AGENT_STS_CLIENT_SECRET instead; a generated secret can start with `-`, which only `--secret=` takes.
 */
export async function tokenCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const { values } = parse('token', args, { id: { type: 'string' }, secret: { type: 'string' }, scope: { type: 'string' }, resource: { type: 'string' } });
  const secret = values.secret ?? env.AGENT_STS_CLIENT_SECRET;
  if (!values.id || !secret) throw new CliError('usage: agent-sts token --id ID --secret=SECRET [--scope S] [--resource R] (or the secret in AGENT_STS_CLIENT_SECRET)', 2);
  const { url } = target(values, env);
  const form = new URLSearchParams({ grant_type: 'client_credentials', ...(values.scope ? { scope: values.scope } : {}), ...(values.resource ? { resource: values.resource } : {}) });
  let res: Response;
  try {
    res = await fetch(`${url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: clientSecretBasic(values.id, secret) },
      body: form.toString(),
    });
  } catch (err) {
    throw new CliError(`cannot reach ${url}: ${describeThrown(err)}`, 1);
  }
  const body = await res.json().catch(() => undefined) as { error?: string; error_description?: string } | undefined;
  if (!res.ok) throw new CliError(`${res.status} ${body?.error ?? ''}: ${body?.error_description ?? res.statusText}`, 1);
  return body;
}

const DECODE_USAGE = 'usage: agent-sts decode <JWT> | <Biscuit> [--issuer URL]  (prints the token without verifying it)';

/**
 * `decode TOKEN [--issuer URL]`: header and claims of any of our JWTs, unverified; or a Biscuit's blocks
 * and chain, read with its issuer's root key (--issuer, AGENT_STS_URL or ISSUER).
 */
export async function decodeCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const { values, positionals } = parse('decode', args, { issuer: { type: 'string' } });
  const token = positionals[0];
  if (!token) throw new CliError(DECODE_USAGE, 2);
  if (isBiscuit(token)) {
    const issuer = values.issuer || values.url || env.AGENT_STS_URL || env.ISSUER;
    return decodeBiscuit(token, issuer?.replace(/\/$/, ''));
  }
  return decodeJwt(token);
}

function decodeJwt(token: string): unknown {
  const parts = token.split('.');
  if (parts.length !== 3) throw new CliError('decode: not a JWT (three dot-separated parts) nor a Biscuit (base64url naming a root key id)', 2);
  try {
    const [header, claims] = parts.slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>);
    return { header, claims, verified: false };
  } catch {
    throw new CliError('not a JWT: its header or claims are not base64url JSON', 1);
  }
}

const VERIFY_USAGE = 'usage: agent-sts verify <token> --audience A [--issuer URL] [--trust-domain D] [--tool T]... [--spend CENTS]';

/** `--spend CENTS` as a non-negative integer. */
function spendOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d{1,15}$/.test(value)) throw new CliError('--spend must be a non-negative integer (cents)', 2);
  return Number(value);
}

/**
 * `verify TOKEN --audience A [--issuer URL] [--trust-domain D] [--tool T]... [--spend CENTS]`: checks a
 * token as a resource server would. A Biscuit is checked for the tools and spend; JWTs take neither.
 */
export async function verifyCommand(args: string[], env: NodeJS.ProcessEnv): Promise<unknown> {
  const { values, positionals } = parse('verify', args, {
    audience: { type: 'string' }, issuer: { type: 'string' }, 'trust-domain': { type: 'string' }, tool: { type: 'string', multiple: true }, spend: { type: 'string' },
  });
  const token = positionals[0];
  if (!token) throw new CliError(VERIFY_USAGE, 2);
  const issuer = (values.issuer ?? target(values, env).url).replace(/\/$/, '');
  const spend = spendOf(values.spend);
  if (isBiscuit(token)) {
    if (!values.audience) throw new CliError('verify needs --audience (the resource the Biscuit is used at)', 2);
    return verifyBiscuitToken(token, { issuer, audience: values.audience, tools: values.tool ?? [], ...(spend !== undefined ? { spend } : {}) });
  }
  if (values.tool || spend !== undefined) throw new CliError('--tool and --spend apply to Biscuits only', 2);
  return verifyJwt(token, { issuer, audience: values.audience, trustDomain: values['trust-domain'] });
}

/** An access token (or a Txn-Token, by its `typ`) checked with the verifier library. */
async function verifyJwt(token: string, opts: { issuer: string; audience: string | undefined; trustDomain: string | undefined }): Promise<unknown> {
  const { Verifier, VerificationError } = await import('../verifier/index.js');
  const typ = (() => {
    try {
      return (JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as { typ?: string }).typ;
    } catch {
      return undefined;
    }
  })();
  const isTxn = typ === 'txntoken+jwt';
  if (!isTxn && !opts.audience) throw new CliError('verify needs --audience (the resource the token is for)', 2);
  const verifier = new Verifier({ issuer: opts.issuer, audience: opts.audience ?? '', ...(opts.trustDomain ? { trustDomain: opts.trustDomain } : {}) });
  try {
    const result = isTxn
      ? await verifier.verifyTxnToken(token)
      : await verifier.verifyAccessToken({ authorization: `Bearer ${token}`, method: 'GET', url: opts.audience! });
    return { valid: true, ...result };
  } catch (err) {
    if (err instanceof VerificationError) throw new CliError(`invalid: ${err.message}`, 1);
    throw new CliError(`cannot verify: ${describeThrown(err)}`, 1);
  }
}
