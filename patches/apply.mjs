#!/usr/bin/env node
// Source patches to installed dependencies, applied by `npm install` / `npm ci` (package.json "postinstall").
// Each replaces one exact passage of one file. A patch already applied is left as it is; a passage found
// neither as it was nor as patched stops the install, so an update of the dependency that moves the code is
// seen, and the patch reviewed, instead of the server running unpatched. The README (Dependency patches) says
// why each exists. Usage: node patches/apply.mjs [project root, default the directory above this one]
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PATCHES = [
  {
    // One OIDCContext per request, made when the request enters a provider route, instead of a new getter
    // closure per request defining ctx.oidc. V8's young-generation collections kept each request's closure,
    // and through it the whole request (ctx, req, res, the OIDCContext), alive until the next full collection:
    // about 9 KB promoted to the old generation per token request, a full collection every few seconds under
    // load, and the p99 set by their pauses. Same property (own, not writable, not enumerable, not
    // configurable), same value; the context is made on every provider route rather than on first use.
    package: 'oidc-provider',
    file: 'lib/helpers/initialize_app.js',
    from: `  const ensureOIDC = async (ctx, next) => {
    let oidcCtx;
    Object.defineProperty(ctx, 'oidc', {
      get: () => {
        oidcCtx ||= new this.OIDCContext(ctx);
        return oidcCtx;
      },
    });
    return als.run(ctx, () => next());
  };`,
    to: `  const ensureOIDC = async (ctx, next) => {
    // patched by agent-sts (patches/apply.mjs): no getter closure per request.
    Object.defineProperty(ctx, 'oidc', { value: new this.OIDCContext(ctx) });
    return als.run(ctx, () => next());
  };`,
  },
];

const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..'));
let failed = false;
for (const p of PATCHES) {
  const path = join(root, 'node_modules', p.package, p.file);
  let text;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    console.error(`patches: ${p.package}/${p.file}: cannot read it (${err.code ?? err.message})`);
    failed = true;
    continue;
  }
  if (text.includes(p.to)) continue;
  const at = text.indexOf(p.from);
  if (at === -1 || text.indexOf(p.from, at + 1) !== -1) {
    console.error(`patches: ${p.package}/${p.file}: the passage to patch is not there exactly once; the installed version differs from the one the patch was written for, review patches/apply.mjs`);
    failed = true;
    continue;
  }
  writeFileSync(path, text.slice(0, at) + p.to + text.slice(at + p.from.length));
  console.log(`patches: ${p.package}/${p.file} patched`);
}
if (failed) process.exit(1);
