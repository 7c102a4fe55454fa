/** Runs agent-sts in a child process for the benchmarks and tells the parent when it listens. */
import { loadConfig } from '../src/config/config.js';
import { startServer } from '../src/http/server.js';

await startServer(loadConfig(), { keyRefreshMs: 0 });
process.send?.('ready');
// Exit cleanly when the parent goes, so --cpu-prof can write its profile.
process.on('SIGTERM', () => process.exit(0));
