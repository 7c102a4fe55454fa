/**
 * A machine too busy for Biscuit's Datalog time limit, made deterministic: while on, every reading of the
 * clock by the Biscuit code (the wasm module, through its `performance_now` import, and src/tokens/biscuit-*)
 * is a minute later than the one before, so each evaluation overruns whatever time limit it has, as if the
 * process had waited that long for a core. Other readings are left alone. Loading the CPU reproduces it only
 * sometimes.
 */
const realNow = performance.now.bind(performance);
let on = false;
let leaps = 0;
let installed = false;

export function busyDatalog(enable = true): void {
  on = enable;
  if (installed) return;
  installed = true;
  performance.now = function now(): number {
    const t = realNow();
    return on && calledFromBiscuitCode() ? t + ++leaps * 60_000 : t;
  };
}

/** Whether the caller is wasm or a src/tokens/biscuit-* module, read from the raw call sites (test runners reformat `stack` strings). */
function calledFromBiscuitCode(): boolean {
  const prepare = Error.prepareStackTrace;
  Error.prepareStackTrace = (_, sites) => sites;
  try {
    const sites = new Error().stack as unknown as { toString(): string }[];
    return sites.slice(2, 4).some((s) => /wasm|\/src\/tokens\/biscuit-/.test(String(s)));
  } finally {
    Error.prepareStackTrace = prepare;
  }
}
