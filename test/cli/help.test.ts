import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, type CliRun } from '../support/cli.js';
import { describeThrown } from '../../src/cli/cli-error.js';
import { COMMANDS, type CommandHelp } from '../../src/cli/commands.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Where a command that wrongly went on to serve or migrate would keep its data, instead of ./data. */
const DATA_DIR = mkdtempSync(join(tmpdir(), 'agent-sts-help-'));

/** Runs each command line, a few at a time (each is a node process); a command that does not end (serve) is killed. */
async function runAll(lines: string[][]): Promise<Map<string, CliRun>> {
  const runs = new Map<string, CliRun>();
  const queue = [...lines];
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let line = queue.shift(); line; line = queue.shift()) runs.set(line.join(' '), await cli(line, { AGENT_STS_URL: 'http://127.0.0.1:9', DATA_DIR, PORT: '0' }, { timeoutMs: 60_000 }));
  }));
  return runs;
}

/** stderr without the runtime notices some dependencies print. */
const errLines = (run: CliRun) => run.stderr.trim().split('\n').filter((l) => l && !/Unsupported runtime/.test(l));

describe('agent-sts --help and --version', { timeout: 600_000 }, () => {
  it('every command and subcommand of the command table answers --help and -h with its usage on stdout, exit 0', async () => {
    const expected: [string[], string][] = [];
    for (const [name, command] of Object.entries(COMMANDS) as [string, CommandHelp][]) {
      for (const flag of ['--help', '-h']) {
        expected.push([[name, flag], `usage: agent-sts ${name}`]);
        for (const sub of Object.keys(command.subcommands ?? {})) expected.push([[name, sub, flag], `usage: agent-sts ${name} ${sub}`]);
      }
    }
    expected.push([['--help'], 'usage: agent-sts <command>'], [['-h'], 'usage: agent-sts <command>'], [['help'], 'usage: agent-sts <command>'],
      [['help', 'agents', 'add'], 'usage: agent-sts agents add'], [['agents', 'add', '--id', 'x', '--help'], 'usage: agent-sts agents add']);
    const runs = await runAll(expected.map(([line]) => line));
    for (const [line, usage] of expected) {
      const run = runs.get(line.join(' '))!;
      expect(run.status, `agent-sts ${line.join(' ')}: ${run.stderr}`).toBe(0);
      expect(run.stdout.startsWith(usage), `agent-sts ${line.join(' ')} printed ${run.stdout}`).toBe(true);
      expect(errLines(run), `agent-sts ${line.join(' ')}`).toEqual([]);
    }
    // The program's help lists every command.
    for (const name of Object.keys(COMMANDS)) expect(runs.get('--help')!.stdout).toMatch(new RegExp(`^  ${name} `, 'm'));
  });

  it('--version, -V and version print the package version; unknown options and commands still exit 2 with one clear line', async () => {
    const runs = await runAll([['--version'], ['-V'], ['version'], ['agents', 'add', '--bogus'], ['guard', '--bogus'], ['serve', '--bogus'], ['--bogus'], ['frobnicate'], ['keys', 'spin']]);
    for (const line of ['--version', '-V', 'version']) {
      expect(runs.get(line)).toMatchObject({ status: 0, stdout: `agent-sts ${VERSION}\n` });
    }
    const refusals: [string, RegExp][] = [
      ['agents add --bogus', /^agent-sts: agents add: unknown option '--bogus'; see agent-sts agents add --help$/],
      ['guard --bogus', /^agent-sts: guard: unknown option '--bogus'; see agent-sts guard --help$/],
      ['serve --bogus', /^agent-sts: serve: unknown option '--bogus'; see agent-sts serve --help$/],
      ['keys spin', /^agent-sts: keys: unknown subcommand "spin": list or rotate; see agent-sts keys --help$/],
    ];
    for (const [line, message] of refusals) {
      const run = runs.get(line)!;
      expect(run.status, `agent-sts ${line}: ${run.stderr}`).toBe(2);
      expect(errLines(run)).toHaveLength(1);
      expect(errLines(run)[0]).toMatch(message);
      expect(run.stdout).toBe('');
    }
    // Not a command at all: the line, then the list of commands (on stderr).
    for (const [line, message] of [['--bogus', 'agent-sts: unknown option "--bogus"'], ['frobnicate', 'agent-sts: unknown command "frobnicate"']] as const) {
      const run = runs.get(line)!;
      expect(run.status, `agent-sts ${line}: ${run.stderr}`).toBe(2);
      expect(errLines(run)[0]).toBe(message);
      expect(errLines(run)[1]).toBe('usage: agent-sts <command> [options]');
      expect(run.stdout).toBe('');
    }
  });

  it('says something true for any value thrown, never a bare "undefined"', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const told = new Map<unknown, string>([
      [new Error('no route to host'), 'no route to host'],
      [new TypeError(), 'TypeError with no message'],
      ['a plain string', 'a plain string'],
      ['', 'an error with an empty message'],
      [{ RunLimit: 'Timeout' }, 'failed with a non-Error value: {"RunLimit":"Timeout"}'],
      [undefined, 'failed with no error value (nothing was thrown with it)'],
      [null, 'failed with no error value (nothing was thrown with it)'],
      [42, 'failed with a non-Error value: 42'],
      [cyclic, 'failed with a non-Error value: [object Object]'],
    ]);
    for (const [value, text] of told) expect(describeThrown(value)).toBe(text);
  });
});
