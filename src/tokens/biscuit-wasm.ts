import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export type BiscuitApi = typeof import('@biscuit-auth/biscuit-wasm');

/** The part of the WebAssembly global used here (not in this project's TypeScript libs). */
interface WasmModule { readonly brand?: 'module' }
const wasm = (globalThis as unknown as {
  WebAssembly: {
    compile(bytes: Uint8Array): Promise<WasmModule>;
    Module: { imports(module: WasmModule): { module: string; name: string }[] };
    instantiate(module: WasmModule, imports: Record<string, Record<string, unknown>>): Promise<{ exports: Record<string, unknown> }>;
  };
}).WebAssembly;

let loading: Promise<BiscuitApi> | undefined;

/** The installed package's `module/` folder (its `exports` only lets bundlers import it). */
function moduleDir(): string {
  const require = createRequire(import.meta.url);
  for (const base of require.resolve.paths('@biscuit-auth/biscuit-wasm') ?? []) {
    const dir = join(base, '@biscuit-auth', 'biscuit-wasm', 'module');
    if (existsSync(join(dir, 'biscuit_bg.wasm'))) return dir;
  }
  throw new Error('@biscuit-auth/biscuit-wasm is not installed');
}

/**
 * Loads `@biscuit-auth/biscuit-wasm` without a bundler or a command-line flag, once per process: the
 * package imports its `.wasm` file the bundler way, which plain Node refuses, so the module is compiled
 * here and its imports wired by hand (the JS glue, and `performance_now` for every snippet), built from
 * the module's own import list rather than hard-coded snippet names. Then one authorization with a date
 * check runs, so the first real one is not slow.
 */
export function loadBiscuit(): Promise<BiscuitApi> {
  loading ??= (async () => {
    const dir = moduleDir();
    const glue = (await import(pathToFileURL(join(dir, 'biscuit_bg.js')).href)) as BiscuitApi & {
      __wbg_set_wasm(exports: Record<string, unknown>): void;
    };
    const module = await wasm.compile(await readFile(join(dir, 'biscuit_bg.wasm')));
    const imports: Record<string, Record<string, unknown>> = {};
    for (const imp of wasm.Module.imports(module)) {
      if (imports[imp.module]) continue;
      if (imp.module === './biscuit_bg.js') imports[imp.module] = glue as unknown as Record<string, unknown>;
      else if (imp.module.startsWith('./snippets/')) imports[imp.module] = { performance_now: () => performance.now() };
      else throw new Error(`biscuit-wasm needs an import this loader does not know: ${imp.module}`);
    }
    const instance = await wasm.instantiate(module, imports);
    glue.__wbg_set_wasm(instance.exports);
    // The start function announces itself on stdout; keep stdout for the application.
    const log = console.log;
    console.log = () => {};
    try {
      (instance.exports.__wbindgen_start as () => void)();
    } finally {
      console.log = log;
    }
    warmUp(glue);
    return glue;
  })().catch((err) => {
    loading = undefined;
    throw err;
  });
  return loading;
}

/**
 * A value as a Datalog parameter, the way the package's own tagged templates pass them: dates as
 * `{date}`, bytes as `{bytes}`, sets as `{set}`, keys by their Datalog form; strings, integers and booleans
 * as they are. Values only ever enter Datalog this way, never by concatenation.
 */
export function datalogTerm(value: unknown): unknown {
  if (value instanceof Date) return { date: value.toISOString() };
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString('hex') };
  if (Array.isArray(value)) return value.map(datalogTerm);
  if (value instanceof Set) return { set: [...value].map(datalogTerm) };
  if (value && typeof (value as { toDatalogParameter?: unknown }).toDatalogParameter === 'function') {
    return (value as { toDatalogParameter(): unknown }).toDatalogParameter();
  }
  if (typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isSafeInteger(value))) return value;
  throw new TypeError(`not a Datalog term: ${typeof value}`);
}

/** Parameters for `addCodeWithParameters`, each converted with {@link datalogTerm}. */
export function datalogParams(params: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(params).map(([k, v]) => [k, datalogTerm(v)]));
}

function warmUp(b: BiscuitApi): void {
  const root = new b.KeyPair(b.SignatureAlgorithm.Ed25519);
  const builder = new b.BiscuitBuilder();
  builder.addCodeWithParameters('check if time($t), $t <= {exp}', datalogParams({ exp: new Date(Date.now() + 60_000) }), {});
  const token = builder.build(root.getPrivateKey());
  const authorizer = new b.AuthorizerBuilder();
  authorizer.addCodeWithParameters('time({now}); allow if true', datalogParams({ now: new Date() }), {});
  const auth = authorizer.buildAuthenticated(token);
  auth.authorizeWithLimits({ max_time_micro: 1_000_000 });
  auth.free();
  token.free();
}
