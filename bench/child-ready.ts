/** For servers the benchmarks run in child processes: say when listening, and answer memory queries over IPC. */
export interface MemorySample { rss: number; heapTotal: number; heapUsed: number }

export function reportReady(): void {
  process.on('message', (message) => {
    if (message !== 'memory') return;
    const { rss, heapTotal, heapUsed } = process.memoryUsage();
    process.send?.({ memory: { rss, heapTotal, heapUsed } satisfies MemorySample });
  });
  process.send?.('ready');
}
