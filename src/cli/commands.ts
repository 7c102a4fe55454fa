/**
 * The commands of `agent-sts` and their usage: what `--help` prints, for the program, each command and each
 * subcommand. The dispatcher in main.ts has one runner per entry here, so a command cannot exist without its help.
 */
export interface CommandHelp {
  /** One line for the program's list of commands. */
  summary: string;
  /** What `agent-sts <command> --help` prints. */
  usage: string;
  /** Subcommands, each with what `agent-sts <command> <subcommand> --help` prints. */
  subcommands?: Record<string, string>;
}

const SERVER = `
They talk to a running server: --url URL (or AGENT_STS_URL; default ISSUER, else http://localhost:PORT), with the admin
token from --admin-token TOKEN, AGENT_STS_ADMIN_TOKEN or DATA_DIR/admin-token. Output is JSON.`;

const HELP = '  -h, --help   print this help and exit';

export const COMMANDS = {
  serve: {
    summary: 'run the server (configuration from environment variables; see README)',
    usage: `usage: agent-sts serve

Runs the server. Its configuration comes from environment variables (the README's Configuration section).
With no command at all, agent-sts serves.

${HELP}`,
  },
  migrate: {
    summary: 'apply database migrations and exit',
    usage: `usage: agent-sts migrate

Applies the database migrations (DATABASE_URL, or the embedded database in DATA_DIR) and exits.

${HELP}`,
  },
  guard: {
    summary: 'run the guard proxy in front of an HTTP or MCP server',
    usage: `usage: agent-sts guard --upstream URL --port N --issuer URL --resource URI
                       [--policy FILE] [--trust-domain DOMAIN] [--host ADDRESS] [--ssf --client-id ID]

Runs the guard proxy: requests to it need a token of the issuer for the resource; they are forwarded to the
upstream with the agent's identity in x-agent-sts-* headers.

  --upstream URL         the HTTP or MCP server to protect
  --port N               the port to listen on (0: any free port)
  --issuer URL           the agent-sts issuer whose tokens are accepted
  --resource URI         this resource's identifier: the audience tokens must name
  --policy FILE          the scopes each method or MCP tool needs (JSON; see README)
  --trust-domain DOMAIN  the SPIFFE trust domain of the agents
  --host ADDRESS         the address to listen on (default 127.0.0.1)
  --ssf --client-id ID   subscribe to the issuer's Shared Signals stream by poll, so revoked tokens are refused
                         at once; the client's secret from AGENT_STS_CLIENT_SECRET; the client needs scope
                         ssf.manage, the issuer as audience and the resource granted in its registration:
                         "ssf": {"resources": [URI]}
${HELP}`,
  },
  agents: {
    summary: 'add | list | show | disable agents (admin API)',
    usage: `usage: agent-sts agents add --id ID [--scope S]... [--audience A]... [--auth-method M] [--json '{...}']
       agent-sts agents list [--status S]
       agent-sts agents show ID
       agent-sts agents disable ID
${SERVER}
Each subcommand answers --help.`,
    subcommands: {
      add: `usage: agent-sts agents add --id ID [--scope S]... [--audience A]... [--auth-method M] [--json '{...}']

Registers an agent; prints it with its client secret, which is shown once.

  --id ID            spiffe://<trust-domain>/<path>
  --scope S          a scope it may ask for (repeatable)
  --audience A       an audience it may ask for (repeatable)
  --auth-method M    its token_endpoint_auth_method
  --json '{...}'     any other fields of the registration, as a JSON object
${HELP}
${SERVER}`,
      list: `usage: agent-sts agents list [--status S]

Lists the agents, or those with status S (active, disabled).
${HELP}
${SERVER}`,
      show: `usage: agent-sts agents show ID

Prints one agent.
${HELP}
${SERVER}`,
      disable: `usage: agent-sts agents disable ID

Disables an agent: its tokens are refused from then on.
${HELP}
${SERVER}`,
    },
  },
  keys: {
    summary: 'list | rotate signing keys (admin API)',
    usage: `usage: agent-sts keys list
       agent-sts keys rotate
${SERVER}
Each subcommand answers --help.`,
    subcommands: {
      list: `usage: agent-sts keys list

Lists the signing keys and their state.
${HELP}
${SERVER}`,
      rotate: `usage: agent-sts keys rotate

Makes new signing keys current; the old ones still verify until they retire.
${HELP}
${SERVER}`,
    },
  },
  token: {
    summary: 'a client-credentials token, for trying things',
    usage: `usage: agent-sts token --id ID --secret=SECRET [--scope S] [--resource R] [--url URL]

Gets a token by client credentials, for trying things. Write --secret= with the =: a generated secret can
start with -. The secret may come from AGENT_STS_CLIENT_SECRET instead. The server: --url or AGENT_STS_URL.
${HELP}`,
  },
  decode: {
    summary: 'print a JWT or a Biscuit without verifying it',
    usage: `usage: agent-sts decode JWT
       agent-sts decode BISCUIT [--issuer URL]

A JWT: its header and claims, not verified. A Biscuit: its root key id, revocation ids, each block's Datalog
and its chain; the Biscuit library reads a token only with its issuer's root key, from --issuer or
AGENT_STS_URL (signatures are checked on the way; revocation is not).
${HELP}`,
  },
  verify: {
    summary: 'verify a token as a resource server would',
    usage: `usage: agent-sts verify TOKEN --audience A [--issuer URL] [--trust-domain D]
       agent-sts verify BISCUIT --audience A [--issuer URL] [--tool T]... [--spend CENTS]

Verifies an access token or Txn-Token with the verifier library, as a resource server would (DPoP-bound
tokens need a proof and are refused). A Biscuit: the whole chain for these tools, this resource (the
audience) and this spend, and the issuer's revocation list. The issuer: --issuer, else AGENT_STS_URL.
${HELP}`,
  },
  version: {
    summary: 'print the version (also --version, -V)',
    usage: `usage: agent-sts version   (or agent-sts --version, agent-sts -V)

Prints the version of agent-sts.
${HELP}`,
  },
  help: {
    summary: 'print this help, or a command\'s (also --help, -h)',
    usage: `usage: agent-sts help [COMMAND [SUBCOMMAND]]   (or agent-sts [COMMAND [SUBCOMMAND]] --help)

Prints the list of commands, or the usage of one.
${HELP}`,
  },
} satisfies Record<string, CommandHelp>;

export type CommandName = keyof typeof COMMANDS;

export const isCommand = (name: string): name is CommandName => Object.hasOwn(COMMANDS, name);

/** What `agent-sts --help` prints. */
export function programUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}${(c as CommandHelp).summary}`);
  return `usage: agent-sts <command> [options]

commands:
${lines.join('\n')}

agent-sts <command> --help prints a command's usage (and agent-sts <command> <subcommand> --help a subcommand's).
With no command, agent-sts serves. Exit codes: 0 done, 1 refused or unreachable, 2 usage or configuration error.
`;
}

/** The usage of a command, or of one of its subcommands when `sub` names one. */
export function usageOf(command: CommandName, sub?: string): string {
  const c: CommandHelp = COMMANDS[command];
  const text = sub !== undefined && c.subcommands && Object.hasOwn(c.subcommands, sub) ? c.subcommands[sub]! : c.usage;
  return text.endsWith('\n') ? text : `${text}\n`;
}
