#!/usr/bin/env node
// `npm start` and `npm run migrate` run this first: it compiles the TypeScript sources to dist/ (tsc, as
// `npm run build` does) only when there is no successful build yet or something it compiles from changed since:
// a file or directory under src/ or migrations/ (a directory's time changes when a file is added, renamed or
// deleted), the tsconfig files or package-lock.json (other dependencies, other types). A restart with nothing
// changed then takes milliseconds here instead of a whole compilation.
//
// dist/.build-stamp marks a successful build; its time is the time the build started, so a source saved while
// tsc ran is compiled on the next start. A failed build writes no stamp, so the next start compiles again
// (tsc emits JavaScript even for sources with type errors; those outputs are never taken for a good build).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const stampPath = join(root, 'dist', '.build-stamp');
const entry = join(root, 'dist', 'src', 'cli', 'main.js');
const inputs = ['src', 'migrations', 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json'];

/** The newest modification time of a file, or of a directory and everything in it (ms; 0 when missing). */
function newest(path) {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    return 0;
  }
  let time = stat.mtimeMs;
  if (stat.isDirectory()) {
    for (const name of readdirSync(path)) time = Math.max(time, newest(join(path, name)));
  }
  return time;
}

const stamp = existsSync(stampPath) && existsSync(entry) ? statSync(stampPath).mtimeMs : 0;
const changed = Math.max(...inputs.map((p) => newest(join(root, p))));
if (stamp > 0 && changed <= stamp) process.exit(0);

let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  process.stderr.write('agent-sts: dist/ needs building and typescript is not installed (npm ci installs it; npm ci --omit=dev does not)\n');
  process.exit(1);
}
const started = Date.now();
process.stderr.write(`agent-sts: compiling the TypeScript sources to dist/ (${stamp ? 'sources changed since the last build' : 'no build yet'})\n`);
const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (result.status !== 0) process.exit(result.status ?? 1);
mkdirSync(join(root, 'dist'), { recursive: true });
writeFileSync(stampPath, `${new Date(started).toISOString()}\n`);
utimesSync(stampPath, started / 1000, started / 1000);
process.stderr.write(`agent-sts: compiled in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
