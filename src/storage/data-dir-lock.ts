import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';

export class DataDirLockedError extends Error {
  constructor(dir: string, holder: string) {
    super(`the data directory ${dir} is in use by another agent-sts server (${holder}); stop it or choose another DATA_DIR`);
    this.name = 'DataDirLockedError';
  }
}

const heldHere = new Set<string>();

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes an exclusive lock on a data directory for this process, so two servers never open
 * one embedded database (PGlite has no inter-process lock). A lock left by a dead process is taken over.
 * Returns the function that releases it.
 */
export function lockDataDir(dir: string): () => void {
  const abs = resolve(dir);
  mkdirSync(abs, { recursive: true });
  const file = join(abs, 'agent-sts.lock');
  if (heldHere.has(abs)) throw new DataDirLockedError(abs, `this process, pid ${process.pid}`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      heldHere.add(abs);
      return () => {
        if (!heldHere.delete(abs)) return;
        rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
        throw new DataDirLockedError(abs, `pid ${pid}`);
      }
      rmSync(file, { force: true });
    }
  }
  throw new DataDirLockedError(abs, 'a concurrent start');
}
