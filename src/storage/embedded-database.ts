import { closeSync, existsSync, fsyncSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { NodeFS } from '@electric-sql/pglite/nodefs';

/**
 * PGlite's Node filesystem (emscripten's NODEFS) has no fsync: PostgreSQL's fsync() and fdatasync() inside
 * the WebAssembly return success without reaching the disk, and PGlite starts PostgreSQL with `-F` (fsync
 * off). This one gives NODEFS a real fsync(2), counted in `fsyncs`. A failed fsync reaches PostgreSQL as an
 * errno, and PostgreSQL then stops rather than carry on with what may not be on disk.
 */
class DurableNodeFS extends NodeFS {
  hooked = false;
  fsyncs = 0;

  override async init(...args: Parameters<NodeFS['init']>) {
    const res = await super.init(...args);
    res.emscriptenOpts.preRun = [...(res.emscriptenOpts.preRun ?? []), (mod) => {
      const nodefs = mod.NODEFS as unknown as {
        stream_ops: { fsync?: (stream: { nfd: number }) => number };
        tryFSOperation: (f: () => void) => void;
      };
      nodefs.stream_ops.fsync = (stream) => {
        nodefs.tryFSOperation(() => fsyncSync(stream.nfd));
        this.fsyncs++;
        return 0;
      };
      this.hooked = true;
    }];
    return res;
  }
}

/** fsyncs every file and directory under `dir`. */
function fsyncTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) fsyncTree(join(dir, e.name));
    else if (e.isFile()) fsyncPath(join(dir, e.name));
  }
  fsyncPath(dir);
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The embedded database and how many fsyncs it has made (for the tests that prove it makes them). */
export interface EmbeddedDatabase {
  pglite: PGlite;
  fsyncs(): number;
}

/**
 * Opens the embedded PostgreSQL on `pgdata` durably: fsync on, and `wal_sync_method=fsync` so a commit
 * returns only once its WAL is on disk (checkpoints fsync the data files too). A fresh data directory,
 * which initdb fills without fsync, is synced once. Refuses to open when the fsync hook could not be
 * installed (a PGlite whose internals changed) rather than run without durability.
 */
export async function openEmbeddedDatabase(pgdata: string): Promise<EmbeddedDatabase> {
  const fresh = !existsSync(join(pgdata, 'PG_VERSION'));
  const fs = new DurableNodeFS(pgdata);
  // Later settings override the defaults' -F.
  const pglite = new PGlite({ fs, startParams: [...PGlite.defaultStartParams, '-c', 'fsync=on', '-c', 'wal_sync_method=fsync'] });
  await pglite.waitReady;
  const { rows } = await pglite.query<{ fsync: string; wal_sync_method: string }>(
    "select current_setting('fsync') as fsync, current_setting('wal_sync_method') as wal_sync_method",
  );
  if (!fs.hooked || rows[0]?.fsync !== 'on' || rows[0]?.wal_sync_method !== 'fsync') {
    await pglite.close().catch(() => {});
    throw new Error(`it would not be durable (fsync hook installed: ${fs.hooked}, settings ${JSON.stringify(rows[0])})`);
  }
  if (fresh) fsyncTree(pgdata);
  return { pglite, fsyncs: () => fs.fsyncs };
}
