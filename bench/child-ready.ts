/**
 * For servers the benchmarks run in child processes: say when listening, answer memory queries over IPC, and
 * profile the main thread's CPU on request (the inspector's sampling profiler, started and stopped over IPC).
 */
import { Session } from 'node:inspector/promises';

export interface MemorySample { rss: number; heapTotal: number; heapUsed: number }

/** Sampling interval of the profiles taken on request, µs. */
export const PROFILE_INTERVAL_US = 100;

let session: Session | undefined;

async function profileCommand(message: 'profile-start' | 'profile-stop'): Promise<unknown> {
  if (message === 'profile-start') {
    if (!session) {
      session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.setSamplingInterval', { interval: PROFILE_INTERVAL_US });
    }
    await session.post('Profiler.start');
    return { profiling: true };
  }
  if (!session) throw new Error('profile-stop before profile-start');
  return { profile: (await session.post('Profiler.stop')).profile };
}

export function reportReady(): void {
  process.on('message', (message) => {
    if (message === 'memory') {
      const { rss, heapTotal, heapUsed } = process.memoryUsage();
      process.send?.({ memory: { rss, heapTotal, heapUsed } satisfies MemorySample });
    } else if (message === 'profile-start' || message === 'profile-stop') {
      void profileCommand(message).then((answer) => process.send?.(answer), (err: Error) => process.send?.({ profileError: err.message }));
    }
  });
  process.send?.('ready');
}
