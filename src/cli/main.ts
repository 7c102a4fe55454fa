#!/usr/bin/env node
import { ConfigError, loadConfig, type Config } from '../config/config.js';

// The server and the database are imported only after the configuration is valid, so a bad
// setting is reported on one line before any dependency prints its own start-up notices.

const USAGE = `usage: agent-sts <command>

commands:
  serve     run the server (configuration from environment variables; see README)
  migrate   apply database migrations and exit
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
    server.close().then(() => process.exit(0), (err: Error) => {
      logger.error({ err: { message: err.message } }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main(process.argv.slice(2)).catch((err: Error) => fail(err.message));
