import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Provider from 'oidc-provider';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'patches/apply.mjs');
const FILE = 'node_modules/oidc-provider/lib/helpers/initialize_app.js';
const installed = readFileSync(join(ROOT, FILE), 'utf8');

/** The passage as oidc-provider ships it. */
const ORIGINAL = `  const ensureOIDC = async (ctx, next) => {
    let oidcCtx;
    Object.defineProperty(ctx, 'oidc', {
      get: () => {
        oidcCtx ||= new this.OIDCContext(ctx);
        return oidcCtx;
      },
    });
    return als.run(ctx, () => next());
  };`;

describe('dependency patches (patches/apply.mjs)', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  /** A project root holding only the file to patch, with the given text. */
  function project(text: string): string {
    const dir = mkdtempSync(join(tmpdir(), 'agent-sts-patches-'));
    dirs.push(dir);
    mkdirSync(join(dir, 'node_modules/oidc-provider/lib/helpers'), { recursive: true });
    writeFileSync(join(dir, FILE), text);
    return dir;
  }
  const apply = (dir: string) => spawnSync(process.execPath, [SCRIPT, dir], { encoding: 'utf8' });

  it('are applied to the installed oidc-provider', () => {
    expect(installed).not.toContain(ORIGINAL);
    expect(installed).toContain('patched by agent-sts');
  });

  it('patch the passage as shipped, leave a patched file as it is, and stop on anything else', () => {
    const dir = project(`// before\n${ORIGINAL}\n// after\n`);
    const first = apply(dir);
    expect(first.status, first.stderr).toBe(0);
    const patched = readFileSync(join(dir, FILE), 'utf8');
    expect(patched).not.toContain('let oidcCtx');
    expect(patched.startsWith('// before\n') && patched.endsWith('\n// after\n')).toBe(true);
    // The same text as the installed copy carries.
    expect(installed).toContain(patched.slice('// before\n'.length, -'\n// after\n'.length));

    const again = apply(dir);
    expect(again.status).toBe(0);
    expect(readFileSync(join(dir, FILE), 'utf8')).toBe(patched);

    const moved = apply(project(ORIGINAL.replace('let oidcCtx;', 'let oidcContext;')));
    expect(moved.status).toBe(1);
    expect(moved.stderr).toMatch(/oidc-provider\/lib\/helpers\/initialize_app\.js: the passage to patch is not there exactly once/);
    const twice = apply(project(`${ORIGINAL}\n${ORIGINAL}\n`));
    expect(twice.status).toBe(1);
    const missing = spawnSync(process.execPath, [SCRIPT, mkdtempSync(join(tmpdir(), 'agent-sts-patches-'))], { encoding: 'utf8' });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/cannot read it/);
  });

  it('leave the provider one OIDCContext per request, as an own value rather than a getter', async () => {
    const provider = new Provider('http://127.0.0.1', { features: { devInteractions: { enabled: false } } });
    const seen: PropertyDescriptor[] = [];
    const contexts = new Set<unknown>();
    provider.use(async (ctx, next) => {
      await next();
      const d = Object.getOwnPropertyDescriptor(ctx, 'oidc')!;
      seen.push(d);
      contexts.add(d.value);
    });
    const server: Server = createServer(provider.callback());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      for (let i = 0; i < 2; i++) expect((await fetch(`http://127.0.0.1:${port}/jwks`)).status).toBe(200);
    } finally {
      server.close();
    }
    expect(seen).toHaveLength(2);
    for (const d of seen) {
      expect(d.get).toBeUndefined();
      expect(d.value).toBeInstanceOf(provider.OIDCContext);
      expect({ writable: d.writable, enumerable: d.enumerable, configurable: d.configurable }).toEqual({ writable: false, enumerable: false, configurable: false });
    }
    expect(contexts.size).toBe(2);
  });
});
