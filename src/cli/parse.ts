import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CliError, CliHelp } from './cli-error.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Every command's `-h, --help`. */
export const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const;

/** A parse error of node's parseArgs as one clear line, naming the command and where its usage is. */
function parseError(label: string, err: unknown): CliError {
  const e = err as { code?: string; message?: string };
  const message = e.message ?? String(err);
  let what = message;
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') what = `unknown option ${/'([^']*)'/.exec(message)?.[0] ?? message}`;
  else if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') what = `unexpected argument ${/'([^']*)'/.exec(message)?.[0] ?? message}`;
  return new CliError(`${label}: ${what}; see agent-sts ${label} --help`, 2);
}

/** What {@link parseCommand} returns: parseArgs's result for the command's options and `--help`. */
export type ParsedCommand<T extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: T & typeof HELP_OPTION; allowPositionals: boolean; strict: true }>>;

/**
 * node's parseArgs, strict, with `-h`/`--help` added: help throws {@link CliHelp} with the usage that
 * `usage(positionals)` gives (a subcommand's when the first positional names one); an unknown option or a bad
 * value is a {@link CliError} with exit code 2.
 */
export function parseCommand<T extends Options>(label: string, args: string[], options: T, usage: (positionals: string[]) => string, allowPositionals = true): ParsedCommand<T> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...options, ...HELP_OPTION }, allowPositionals, strict: true });
  } catch (err) {
    // `--help` anywhere still answers with the usage, whatever else is wrong with the line.
    if (args.includes('--help') || args.includes('-h')) throw new CliHelp(usage(args.filter((a) => !a.startsWith('-'))));
    throw parseError(label, err);
  }
  if ((parsed.values as { help?: boolean }).help) throw new CliHelp(usage(parsed.positionals));
  return parsed;
}
