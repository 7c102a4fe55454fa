/** Retries `check` every 20 ms until it passes or `withinMs` has gone by (then its last error is thrown); resolves to the time it took. */
export async function eventually(check: () => Promise<void>, withinMs = 1000): Promise<number> {
  const start = Date.now();
  for (;;) {
    try {
      await check();
      return Date.now() - start;
    } catch (err) {
      if (Date.now() - start > withinMs) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
