#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, type Config } from '../config/config.js';
import { CliError, CliHelp, describeThrown } from './cli-error.js';
import { isCommand, programUsage, usageOf, type CommandName } from './commands.js';
import { parseCommand } from './parse.js';

// The server and the database are imported only after the configuration is valid, so a bad
// setting is reported on one line before any dependency prints its own start-up notices.

function fail(message: string, code = 1): never {
  process.stderr.write(`agent-sts: ${message}\n`);
  process.exit(code);
}

function config(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) fail(`invalid configuration: ${err.message}`, 2);
    throw err;
  }
}

/** The version in agent-sts's package.json (found upwards from this file, in src/ or dist/src/). */
function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'agent-sts' && pkg.version) return pkg.version;
    } catch { /* none here */ }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

/** A command with no options but -h/--help and no arguments. */
const noArguments = (command: CommandName, args: string[]) => parseCommand(command, args, {}, () => usageOf(command), false);

/** `agents`, `keys`, `token`, `decode` and `verify`: print what they return as JSON. */
async function adminCommand(command: 'agents' | 'keys' | 'token' | 'decode' | 'verify', args: string[]): Promise<void> {
  const cmds = await import('./admin-commands.js');
  const run = { agents: cmds.agentsCommand, keys: cmds.keysCommand, token: cmds.tokenCommand, decode: cmds.decodeCommand, verify: cmds.verifyCommand }[command];
  const out = await run(args, process.env);
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

/** One runner per command of the table in commands.ts. */
const RUN: Record<CommandName, (args: string[]) => Promise<void>> = {
  serve: async (args) => {
    noArguments('serve', args);
    await serve();
  },
  migrate: async (args) => {
    noArguments('migrate', args);
    await migrate();
  },
  guard: (args) => guard(args),
  agents: (args) => adminCommand('agents', args),
  keys: (args) => adminCommand('keys', args),
  token: (args) => adminCommand('token', args),
  decode: (args) => adminCommand('decode', args),
  verify: (args) => adminCommand('verify', args),
  version: async (args) => {
    noArguments('version', args);
    process.stdout.write(`agent-sts ${packageVersion()}\n`);
  },
  help: async (args) => {
    const { positionals: [command, sub] } = parseCommand('help', args, {}, () => usageOf('help'));
    if (command === undefined) {
      process.stdout.write(programUsage());
      return;
    }
    if (!isCommand(command)) throw new CliError(`help: unknown command ${JSON.stringify(command)}; see agent-sts --help`, 2);
    process.stdout.write(usageOf(command, sub));
  },
};

async function main(argv: string[]): Promise<void> {
  const [first = 'serve', ...args] = argv;
  const command = first === '--help' || first === '-h' ? 'help' : first === '--version' || first === '-V' ? 'version' : first;
  if (!isCommand(command)) {
    throw new CliError(`${command.startsWith('-') ? `unknown option ${JSON.stringify(command)}` : `unknown command ${JSON.stringify(command)}`}\n${programUsage()}`, 2);
  }
  await RUN[command](args);
}

async function migrate(): Promise<void> {
  const cfg = config();
  const { openDatabase } = await import('../storage/database.js');
  const db = await openDatabase({ databaseUrl: cfg.databaseUrl, dataDir: cfg.dataDir, poolMax: 2 });
  try {
    const applied = await db.migrate();
    process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
  } finally {
    await db.close();
  }
}

async function serve(): Promise<void> {
  const cfg = config();
  const [{ createLogger }, { startServer }] = await Promise.all([import('../log/logger.js'), import('../http/server.js')]);
  const logger = createLogger(cfg.logLevel);
  if (cfg.issuerDefaulted && !isLoopback(cfg.host)) {
    logger.warn({ issuer: cfg.issuer, host: cfg.host }, `ISSUER is not set: tokens name ${cfg.issuer} as their issuer, which only this machine reaches; set ISSUER to the URL clients use`);
  }
  const server = await startServer(cfg, { logger });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    // Closing is bounded by the database deadline (queries in flight end within it); this is the last resort.
    setTimeout(() => {
      logger.error('shutdown did not finish in time; exiting');
      process.exit(1);
    }, 3 * cfg.databaseTimeoutMs + 5000).unref();
    server.close().then(() => process.exit(0), (err: unknown) => {
      logger.error({ err: { message: describeThrown(err) } }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/** A listening address only this machine reaches. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^(::ffff:)?127\./.test(host);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof CliHelp) {
    process.stdout.write(err.text);
    return;
  }
  if (err instanceof CliError) fail(err.message, err.code);
  fail(describeThrown(err));
});

async function guard(args: string[]): Promise<void> {
  const { values } = parseCommand('guard', args, {
    upstream: { type: 'string' }, port: { type: 'string' }, issuer: { type: 'string' }, resource: { type: 'string' },
    policy: { type: 'string' }, 'trust-domain': { type: 'string' }, host: { type: 'string', default: '127.0.0.1' },
    ssf: { type: 'boolean', default: false }, 'client-id': { type: 'string' },
  }, () => usageOf('guard'), false);
  for (const required of ['upstream', 'port', 'issuer', 'resource'] as const) {
    if (!values[required]) fail(`guard: --${required} is required\n${usageOf('guard')}`, 2);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('guard: --port must be 0-65535', 2);
  for (const name of ['upstream', 'issuer'] as const) {
    if (!URL.canParse(values[name]!)) fail(`guard: --${name} must be a URL`, 2);
  }
  const clientSecret = process.env.AGENT_STS_CLIENT_SECRET;
  if (values.ssf && (!values['client-id'] || !clientSecret)) fail('guard: --ssf needs --client-id and the client\'s secret in AGENT_STS_CLIENT_SECRET', 2);
  const [{ createLogger }, { Verifier, SsfReceiver, clientCredentialsTokens }, { createGuardProxy, listenGuard }, { DEFAULT_POLICY, parsePolicy }] = await Promise.all([
    import('../log/logger.js'), import('../verifier/index.js'), import('../guard/guard-proxy.js'), import('../guard/scope-policy.js'),
  ]);
  let policy = DEFAULT_POLICY;
  if (values.policy) {
    try {
      policy = parsePolicy(readFileSync(values.policy, 'utf8'));
    } catch (err) {
      fail(`guard: --policy ${values.policy}: ${describeThrown(err)}`, 2);
    }
  }
  const logger = createLogger(process.env.LOG_LEVEL ?? 'info');
  const verifier = new Verifier({ issuer: values.issuer!.replace(/\/$/, ''), audience: values.resource!, ...(values['trust-domain'] ? { trustDomain: values['trust-domain'] } : {}) });
  const issuer = values.issuer!.replace(/\/$/, '');
  let receiver: InstanceType<typeof SsfReceiver> | undefined;
  if (values.ssf) {
    const accessToken = clientCredentialsTokens({ issuer, clientId: values['client-id']!, clientSecret: clientSecret!, scope: 'ssf.manage', resource: issuer });
    receiver = new SsfReceiver({
      verifier, accessToken, delivery: { method: 'poll' }, description: `agent-sts guard for ${values.resource}`,
      onEvent: (e) => logger.info({ event: e.type, subject: e.subject }, 'security event'),
      onError: (err) => logger.warn({ err: describeThrown(err) }, 'security event stream'),
    });
    try {
      const stream = await receiver.start();
      logger.info({ stream_id: stream.stream_id }, 'subscribed to the issuer\'s Shared Signals stream');
    } catch (err) {
      fail(`guard: --ssf: ${describeThrown(err)}`);
    }
  }
  const server = createGuardProxy({ upstream: values.upstream!, verifier, resource: values.resource!, issuer, policy, logger });
  const bound = await listenGuard(server, port, values.host);
  logger.info({ port: bound, upstream: values.upstream, issuer: values.issuer, resource: values.resource }, 'agent-sts guard listening');
  const shutdown = () => server.close(() => void (receiver?.stop() ?? Promise.resolve()).finally(() => process.exit(0)));
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}
