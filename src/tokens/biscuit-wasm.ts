import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { compileFunction } from 'node:vm';

export type BiscuitApi = typeof import('@biscuit-auth/biscuit-wasm');

/** The part of the WebAssembly global used here (not in this project's TypeScript libs). */
interface WasmModule { readonly brand?: 'module' }
interface WasmMemory { readonly buffer: ArrayBuffer }
const wasm = (globalThis as unknown as {
  WebAssembly: {
    compile(bytes: Uint8Array): Promise<WasmModule>;
    Module: { imports(module: WasmModule): { module: string; name: string }[] };
    Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
    RuntimeError: new () => Error;
  };
}).WebAssembly;

type Glue = BiscuitApi & { __wbg_set_wasm(exports: Record<string, unknown>): void };

/**
 * A fresh instance is made once the current one's linear memory passes this size. The package's Rust side
 * allocates with wee_alloc, which never reuses much of what is freed (RUSTSEC-2022-0054): memory grows by
 * about 126 KB for every verification of a five-hop chain, and a WebAssembly memory never shrinks, so one
 * instance would reach the 4 GiB ceiling and abort after some 30,000 of them. Long before that, the growth
 * sets off a full garbage collection every few milliseconds (a limit of 128 MiB doubled the time of a
 * verification; 8 to 64 MiB measured alike).
 */
export const BISCUIT_INSTANCE_MAX_BYTES = 32 * 1024 * 1024;

interface Generation { b: Glue; memory: WasmMemory; number: number; warmUpFailure?: Error }
let compiled: Promise<{ module: WasmModule; glue: () => Glue }> | undefined;
let current: Generation | undefined;
/** Instances made so far: the next one's number is one more. */
let made = 0;

/** The installed package's `module/` folder (its `exports` only lets bundlers import it). */
function moduleDir(): string {
  const require = createRequire(import.meta.url);
  for (const base of require.resolve.paths('@biscuit-auth/biscuit-wasm') ?? []) {
    const dir = join(base, '@biscuit-auth', 'biscuit-wasm', 'module');
    if (existsSync(join(dir, 'biscuit_bg.wasm'))) return dir;
  }
  throw new Error('@biscuit-auth/biscuit-wasm is not installed');
}

const EXPORTED = /^export (function|class|const) ([A-Za-z_$][\w$]*)/gm;

/**
 * The package's JS glue (`biscuit_bg.js`) as a function that returns a fresh copy of it on each call: its
 * state (the instance it drives, its caches, the finalizers that free objects) lives in module scope, so
 * each instance needs its own copy, and a copy must be collectable with its instance, which an imported
 * ES module never is. The glue is generated code with no imports, only `export function|class|const`.
 */
function glueFactory(source: string, filename: string): () => Glue {
  const names: string[] = [];
  const body = source.replace(EXPORTED, (_, kind: string, name: string) => {
    names.push(name);
    return `${kind} ${name}`;
  });
  if (/^\s*(import|export)\b/m.test(body) || !names.includes('__wbg_set_wasm')) {
    throw new Error(`${filename} has a shape this loader does not know (an import, or an export other than function, class or const)`);
  }
  return compileFunction(`'use strict';\n${body}\nreturn { ${names.join(', ')} };`, [], { filename }) as () => Glue;
}

/** Compiles the package's module and glue once per process. */
function compile(): Promise<{ module: WasmModule; glue: () => Glue }> {
  compiled ??= (async () => {
    const dir = moduleDir();
    const glue = glueFactory(await readFile(join(dir, 'biscuit_bg.js'), 'utf8'), join(dir, 'biscuit_bg.js'));
    const module = await wasm.compile(await readFile(join(dir, 'biscuit_bg.wasm')));
    for (const imp of wasm.Module.imports(module)) {
      if (imp.module !== './biscuit_bg.js' && !imp.module.startsWith('./snippets/')) throw new Error(`biscuit-wasm needs an import this loader does not know: ${imp.module}`);
    }
    return { module, glue };
  })().catch((err) => {
    compiled = undefined;
    throw err;
  });
  return compiled;
}

/** One instance with its own copy of the glue: the glue's exports, and `performance_now` for every snippet. */
function instantiate(c: { module: WasmModule; glue: () => Glue }): Generation {
  const glue = c.glue();
  const imports: Record<string, Record<string, unknown>> = {};
  for (const imp of wasm.Module.imports(c.module)) {
    imports[imp.module] ??= imp.module === './biscuit_bg.js' ? glue as unknown as Record<string, unknown> : { performance_now: () => performance.now() };
  }
  const instance = new wasm.Instance(c.module, imports);
  glue.__wbg_set_wasm(instance.exports);
  // The start function announces itself on stdout; keep stdout for the application.
  const log = console.log;
  console.log = () => {};
  try {
    (instance.exports.__wbindgen_start as () => void)();
  } finally {
    console.log = log;
  }
  wrapThrows(glue);
  let warmUpFailure: Error | undefined;
  try {
    warmUp(glue);
  } catch (err) {
    warmUpFailure = err instanceof Error ? err : new BiscuitLibraryError(err);
  }
  return { b: glue, memory: instance.exports.memory as WasmMemory, number: ++made, ...(warmUpFailure ? { warmUpFailure } : {}) };
}

/**
 * What the wasm library threw, as an `Error`: the library throws plain values (`{RunLimit: "Timeout"}`,
 * `{Format: {...}}`, strings), which have no `message` and no stack; `value` keeps the value for
 * `fromLibraryError` to read, and the message states it.
 */
export class BiscuitLibraryError extends Error {
  constructor(readonly value: unknown) {
    super(`biscuit-wasm: ${describeValue(value)}`);
    this.name = 'BiscuitLibraryError';
  }
}

/** Messages of the library's values are cut here: they end up in logs and on the command line. */
const MAX_DESCRIPTION = 300;

/** A thrown value in words: an Error's message, a string as it is, other values as JSON (at most 300 characters). */
export function describeValue(value: unknown): string {
  let text: string;
  if (value instanceof Error) text = value.message || value.name;
  else if (typeof value === 'string') text = value || 'an empty string';
  else if (value === undefined) text = 'no value (undefined was thrown)';
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > MAX_DESCRIPTION ? `${text.slice(0, MAX_DESCRIPTION)}…` : text;
}

/** The same call, with a non-Error the library throws wrapped in a {@link BiscuitLibraryError}. */
function rethrowingErrors<F extends (...args: any[]) => any>(fn: F): F {
  return function (this: unknown, ...args: unknown[]) {
    try {
      return fn.apply(this, args);
    } catch (err) {
      throw err instanceof Error ? err : new BiscuitLibraryError(err);
    }
  } as F;
}

/**
 * Makes every method and static function of the glue's classes throw Errors only (construction included),
 * so that no caller, log line or command line ever sees a bare `{RunLimit: "Timeout"}` or `undefined` message.
 * The classes belong to this instance's copy of the glue alone.
 */
function wrapThrows(glue: Glue): void {
  const exports = glue as unknown as Record<string, unknown>;
  for (const [name, value] of Object.entries(exports)) {
    if (typeof value !== 'function' || !/^[A-Z]/.test(name) || !value.prototype) continue;
    for (const target of [value, value.prototype as object]) {
      for (const [key, desc] of Object.entries(Object.getOwnPropertyDescriptors(target))) {
        if (key === 'constructor' || key === 'prototype' || typeof desc.value !== 'function') continue;
        Object.defineProperty(target, key, { ...desc, value: rethrowingErrors(desc.value as (...args: unknown[]) => unknown) });
      }
    }
    exports[name] = new Proxy(value, {
      construct(cls, args, newTarget) {
        try {
          return Reflect.construct(cls, args, newTarget) as object;
        } catch (err) {
          throw err instanceof Error ? err : new BiscuitLibraryError(err);
        }
      },
    });
  }
}

/** When a replacement failed, the next attempt waits this long; the current instance serves meanwhile. */
const RETRY_REPLACEMENT_MS = 1000;
let replacementFailedAt = -Infinity;

/**
 * Loads `@biscuit-auth/biscuit-wasm` without a bundler or a command-line flag: the package imports its
 * `.wasm` file the bundler way, which plain Node refuses, so the module is compiled here (once per process)
 * and its imports wired by hand, built from the module's own import list rather than hard-coded snippet
 * names. Each instance runs one authorization and one query with a date check first, so the first real
 * ones are not slow (the wasm code is compiled at its first use); if that warm-up fails (its time limit can
 * run out on a busy machine), the instance serves all the same and {@link biscuitWarmUpFailure} says why.
 *
 * Returns the current instance, or a fresh one when the current one's memory has passed
 * {@link BISCUIT_INSTANCE_MAX_BYTES} (if making it fails, the current one serves on and the next attempt
 * waits a second). Get it for each operation and use it synchronously: an object of one instance must
 * never reach another (most methods refuse it, but a root key returned by a key provider makes the other
 * instance trap), and an instance dropped here is reclaimed once nothing holds it or its objects.
 */
export async function loadBiscuit(): Promise<BiscuitApi> {
  const c = await compile();
  if (!current) {
    current = instantiate(c);
  } else if (current.memory.buffer.byteLength > BISCUIT_INSTANCE_MAX_BYTES && performance.now() - replacementFailedAt > RETRY_REPLACEMENT_MS) {
    try {
      current = instantiate(c);
    } catch {
      replacementFailedAt = performance.now();
    }
  }
  return current.b;
}

/**
 * Drops the current instance after `err` if it is a WebAssembly trap (a panic in the library): what the
 * instance holds may be left inconsistent, so the next {@link loadBiscuit} makes a fresh one.
 */
export function retireBiscuitAfterTrap(err: unknown): void {
  if (err instanceof wasm.RuntimeError) current = undefined;
}

/** Why the current instance's warm-up failed, if it did (the instance works regardless). */
export function biscuitWarmUpFailure(): Error | undefined {
  return current?.warmUpFailure;
}

/** The current instance's number (1 for the first) and linear memory size (for /metrics). */
export function biscuitInstance(): { number: number; memoryBytes: number } | undefined {
  return current && { number: current.number, memoryBytes: current.memory.buffer.byteLength };
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

/**
 * The warm-up's limits: a few facts and iterations are all it needs; the time limit is wide, since the first
 * evaluation compiles the wasm code it runs (about 50 ms on an idle 2-core machine, 3 s at load 12).
 */
const WARM_UP_LIMITS = { max_facts: 100, max_iterations: 10, max_time_micro: 10_000_000 };

function warmUp(b: BiscuitApi): void {
  const root = new b.KeyPair(b.SignatureAlgorithm.Ed25519);
  const builder = new b.BiscuitBuilder();
  builder.addCodeWithParameters('check if time($t), $t <= {exp}', datalogParams({ exp: new Date(Date.now() + 60_000) }), {});
  const token = builder.build(root.getPrivateKey());
  const authorizer = new b.AuthorizerBuilder();
  authorizer.addCodeWithParameters('time({now}); allow if true', datalogParams({ now: new Date() }), {});
  const auth = authorizer.buildAuthenticated(token);
  const rule = b.Rule.fromString('t($t) <- time($t)');
  try {
    auth.authorizeWithLimits(WARM_UP_LIMITS);
    auth.queryWithLimits(rule, WARM_UP_LIMITS);
  } finally {
    rule.free();
    auth.free();
    token.free();
    root.free();
  }
}
