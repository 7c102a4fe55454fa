#!/usr/bin/env node
import { ConfigError, loadConfig, type Config } from '../config/config.js';

// The server and the database are imported only after the configuration is valid, so a bad
// setting is reported on one line before any dependency prints its own start-up notices.

const USAGE = `usage: agent-sts <command>

commands:
  serve     run the server (configuration from environment variables; see README)
  migrate   apply database migrations and exit
  guard     run the guard proxy in front of an HTTP or MCP server:
            agent-sts guard --upstream URL --port N --issuer URL --resource URI
                            [--policy FILE] [--trust-domain DOMAIN] [--host ADDRESS]
                            [--ssf --client-id ID]   (subscribe to the issuer's Shared Signals stream by poll, so
                                      revoked tokens are refused at once; the client's secret from AGENT_STS_CLIENT_SECRET;
                                      the client needs scope ssf.manage and the issuer as audience)
  agents    add --id ID [--scope S]... [--audience A]... [--auth-method M] [--json '{...}'] | list [--status S]
            | show ID | disable ID
  keys      list | rotate
  token     --id ID --secret=SECRET [--scope S] [--resource R]   (client credentials, for trying things; the secret
                                      may come from AGENT_STS_CLIENT_SECRET instead)
  decode    JWT   (header and claims, not verified)
            BISCUIT [--issuer URL]   (root key id, revocation ids, each block's Datalog and the chain; needs the
                                      issuer's root key, from --issuer or AGENT_STS_URL; revocation not checked)
  verify    TOKEN --audience A [--issuer URL] [--trust-domain D]   (as a resource server would; DPoP-bound tokens need a proof and are refused)
            BISCUIT --audience A [--issuer URL] [--tool T]... [--spend CENTS]   (the whole chain for these tools, this
                                      resource and this spend, and the issuer's revocation list)

agents, keys and token talk to a running server: --url or AGENT_STS_URL (default http://localhost:8080),
and the admin token from --admin-token, AGENT_STS_ADMIN_TOKEN or DATA_DIR/admin-token. Output is JSON.
Exit codes: 0 done, 1 refused or unreachable, 2 usage or configuration error.
`;

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

async function main(argv: string[]): Promise<void> {
  const [command = 'serve'] = argv;
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (command === 'migrate') {
    const cfg = config();
    const { openDatabase } = await import('../storage/database.js');
    const db = await openDatabase({ databaseUrl: cfg.databaseUrl, dataDir: cfg.dataDir, poolMax: 2 });
    try {
      const applied = await db.migrate();
      process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
    } finally {
      await db.close();
    }
    return;
  }
  if (command === 'guard') {
    await guard(argv.slice(1));
    return;
  }
  if (['agents', 'keys', 'token', 'decode', 'verify'].includes(command)) {
    const cmds = await import('./admin-commands.js');
    try {
      const out = command === 'agents' ? await cmds.agentsCommand(argv.slice(1), process.env)
        : command === 'keys' ? await cmds.keysCommand(argv.slice(1), process.env)
          : command === 'token' ? await cmds.tokenCommand(argv.slice(1), process.env)
            : command === 'verify' ? await cmds.verifyCommand(argv.slice(1), process.env)
              : await cmds.decodeCommand(argv.slice(1), process.env);
      process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    } catch (err) {
      if (err instanceof cmds.CliError) fail(err.message, err.code);
      throw err;
    }
    return;
  }
  if (command !== 'serve') fail(`unknown command ${JSON.stringify(command)}\n${USAGE}`, 2);

  const cfg = config();
  const [{ createLogger }, { startServer }] = await Promise.all([import('../log/logger.js'), import('../http/server.js')]);
  const logger = createLogger(cfg.logLevel);
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
    server.close().then(() => process.exit(0), (err: Error) => {
      logger.error({ err: { message: err.message } }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main(process.argv.slice(2)).catch((err: Error) => fail(err.message));

async function guard(args: string[]): Promise<void> {
  const { parseArgs } = await import('node:util');
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        upstream: { type: 'string' }, port: { type: 'string' }, issuer: { type: 'string' }, resource: { type: 'string' },
        policy: { type: 'string' }, 'trust-domain': { type: 'string' }, host: { type: 'string', default: '127.0.0.1' },
        ssf: { type: 'boolean', default: false }, 'client-id': { type: 'string' },
      },
      strict: true,
    }));
  } catch (err) {
    fail(`${(err as Error).message}\n${USAGE}`, 2);
  }
  for (const required of ['upstream', 'port', 'issuer', 'resource'] as const) {
    if (!values[required]) fail(`guard: --${required} is required\n${USAGE}`, 2);
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('guard: --port must be 0-65535', 2);
  for (const name of ['upstream', 'issuer'] as const) {
    if (!URL.canParse(values[name]!)) fail(`guard: --${name} must be a URL`, 2);
  }
  const clientSecret = process.env.AGENT_STS_CLIENT_SECRET;
  if (values.ssf && (!values['client-id'] || !clientSecret)) fail('guard: --ssf needs --client-id and the client\'s secret in AGENT_STS_CLIENT_SECRET', 2);
  const [{ readFileSync }, { createLogger }, { Verifier, SsfReceiver, clientCredentialsTokens }, { createGuardProxy, listenGuard }, { DEFAULT_POLICY, parsePolicy }] = await Promise.all([
    import('node:fs'), import('../log/logger.js'), import('../verifier/index.js'), import('../guard/guard-proxy.js'), import('../guard/scope-policy.js'),
  ]);
  let policy = DEFAULT_POLICY;
  if (values.policy) {
    try {
      policy = parsePolicy(readFileSync(values.policy, 'utf8'));
    } catch (err) {
      fail(`guard: --policy ${values.policy}: ${(err as Error).message}`, 2);
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
      onError: (err) => logger.warn({ err: (err as Error).message }, 'security event stream'),
    });
    try {
      const stream = await receiver.start();
      logger.info({ stream_id: stream.stream_id }, 'subscribed to the issuer\'s Shared Signals stream');
    } catch (err) {
      fail(`guard: --ssf: ${(err as Error).message}`);
    }
  }
  const server = createGuardProxy({ upstream: values.upstream!, verifier, resource: values.resource!, issuer, policy, logger });
  const bound = await listenGuard(server, port, values.host);
  logger.info({ port: bound, upstream: values.upstream, issuer: values.issuer, resource: values.resource }, 'agent-sts guard listening');
  const shutdown = () => server.close(() => void (receiver?.stop() ?? Promise.resolve()).finally(() => process.exit(0)));
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}
