import { spawn } from 'node:child_process';

export interface CliRun { status: number | null; stdout: string; stderr: string }

/**
 * Runs the agent-sts command (async, so the test server in this process keeps answering); with `timeoutMs`,
 * a command still running then is killed (status null).
 */
export function cli(args: string[], env: Record<string, string> = {}, opts: { timeoutMs?: number } = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { env: { ...process.env, ...env }, ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}
