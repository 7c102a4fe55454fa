/** Runs agent-sts in a child process for the benchmarks and tells the parent when it listens. */
import { loadConfig } from '../src/config/config.js';
import { startServer } from '../src/http/server.js';
import { reportReady } from './child-ready.js';

await startServer(loadConfig(), { keyRefreshMs: 0 });
reportReady();
// Exit cleanly when the parent goes, so --cpu-prof can write its profile.
process.on('SIGTERM', () => process.exit(0));
