import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';
const POSTGRES_URL = process.env.DATABASE_URL || undefined;

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('has defaults for everything', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      issuer: 'http://localhost:8080',
      port: 8080,
      host: '0.0.0.0',
      trustDomain: 'agent-sts.local',
      databaseUrl: undefined,
      dataDir: './data',
      adminToken: undefined,
      keyEncryptionKey: undefined,
      accessTokenTtl: 300,
      signingAlg: 'EdDSA',
      maxDelegationDepth: 5,
      logLevel: 'info',
      trustProxy: false,
      signOnThreadPool: false,
      metricsEnabled: true,
      metricsToken: undefined,
      anonymousRefusals: { burst: 300, perMinute: 120, intervalMs: 60_000, recordedPerInterval: 20 },
      databaseTimeoutMs: 3000,
    });
    expect(loadConfig({ ANONYMOUS_REFUSAL_BURST: '0', ANONYMOUS_REFUSAL_RATE: '6', ANONYMOUS_REFUSAL_INTERVAL: '5', ANONYMOUS_REFUSALS_RECORDED: '0' }).anonymousRefusals)
      .toEqual({ burst: 0, perMinute: 6, intervalMs: 5000, recordedPerInterval: 0 });
  });

  it('reads only the env object it is given', () => {
    const saved = process.env.PORT;
    process.env.PORT = 'abc';
    try {
      expect(loadConfig({}).port).toBe(8080);
    } finally {
      if (saved === undefined) delete process.env.PORT;
      else process.env.PORT = saved;
    }
  });

  it('reads good values', () => {
    const hex = 'ab'.repeat(32);
    const c = loadConfig({
      ISSUER: 'https://sts.example.com/',
      PORT: '0',
      TRUST_DOMAIN: 'prod.example.org',
      DATABASE_URL: 'postgresql://u@db/sts',
      AGENT_STS_ADMIN_TOKEN: 'x'.repeat(32),
      AGENT_STS_KEY_ENCRYPTION_KEY: hex,
      ACCESS_TOKEN_TTL: '600',
      SIGNING_ALG: 'ES256',
      LOG_LEVEL: 'debug',
      TRUST_PROXY: 'true',
      SIGN_ON_THREAD_POOL: 'true',
      METRICS_ENABLED: 'false',
      METRICS_TOKEN: 'm'.repeat(32),
    });
    expect(c).toMatchObject({
      issuer: 'https://sts.example.com',
      port: 0,
      trustDomain: 'prod.example.org',
      databaseUrl: 'postgresql://u@db/sts',
      adminToken: 'x'.repeat(32),
      accessTokenTtl: 600,
      signingAlg: 'ES256',
      logLevel: 'debug',
      trustProxy: true,
      signOnThreadPool: true,
      metricsEnabled: false,
      metricsToken: 'm'.repeat(32),
    });
    expect(c.keyEncryptionKey).toEqual(Buffer.from(hex, 'hex'));
    const b64 = Buffer.alloc(32, 7);
    expect(loadConfig({ AGENT_STS_KEY_ENCRYPTION_KEY: b64.toString('base64') }).keyEncryptionKey).toEqual(b64);
    expect(loadConfig({ AGENT_STS_KEY_ENCRYPTION_KEY: b64.toString('base64url') }).keyEncryptionKey).toEqual(b64);
  });

  it('takes the default issuer from PORT, and says when the issuer was not set', () => {
    expect(loadConfig({ PORT: '18100' })).toMatchObject({ issuer: 'http://localhost:18100', port: 18100, issuerDefaulted: true });
    expect(loadConfig({})).toMatchObject({ issuer: 'http://localhost:8080', issuerDefaulted: true });
    expect(loadConfig({ PORT: '18100', ISSUER: 'https://sts.example.com' })).toMatchObject({ issuer: 'https://sts.example.com', issuerDefaulted: false });
  });

  it('treats an empty value of any variable as unset', () => {
    const c = loadConfig({ PORT: '', HOST: '', ISSUER: '', LOG_LEVEL: '', ACCESS_TOKEN_TTL: '', DATA_DIR: '', SIGNING_ALG: '', TRUSTED_ISSUERS: '' });
    expect(c).toMatchObject({ port: 8080, host: '0.0.0.0', issuer: 'http://localhost:8080', logLevel: 'info', accessTokenTtl: 300, dataDir: './data', signingAlg: 'EdDSA', trustedIssuers: [] });
  });

  it('treats empty optional values as unset', () => {
    const c = loadConfig({ DATABASE_URL: '', AGENT_STS_ADMIN_TOKEN: '', AGENT_STS_KEY_ENCRYPTION_KEY: '', HEAP_GROWING_PERCENT: '' });
    expect(c.databaseUrl).toBeUndefined();
    expect(c.adminToken).toBeUndefined();
    expect(c.keyEncryptionKey).toBeUndefined();
  });

  const bad: [string, string, RegExp?][] = [
    ['PORT', 'abc', /^PORT: must be a whole number 0-65535$/],
    ['PORT', ' ', /whole number 0-65535/],
    ['PORT', '1e3', /whole number 0-65535/],
    ['PORT', '0x50', /whole number 0-65535/],
    ['ACCESS_TOKEN_TTL', '5m', /^ACCESS_TOKEN_TTL: must be a whole number 1-86400$/],
    ['SSF_POLL_MAX_WAIT_MS', '1.5', /whole number 0-25000/],
    ['TRUSTED_ISSUERS', '{"issuer": "https://ci.example"}', /^TRUSTED_ISSUERS: must be a JSON array of /],
    ['TRUSTED_ISSUERS', '[{"jwks_uri": "https://ci.example/jwks", "audience": "sts"}]', /^TRUSTED_ISSUERS: \[0\]\.issuer: is required$/],
    ['TRUSTED_ISSUERS', '[{"issuer": "https://ci.example", "jwks_uri": "https://ci.example/jwks"}]', /^TRUSTED_ISSUERS: \[0\]\.audience: is required$/],
    ['TRUSTED_ISSUERS', '[{"issuer": 5, "jwks_uri": "https://ci.example/jwks", "audience": "sts"}]', /^TRUSTED_ISSUERS: \[0\]\.issuer: must be a string$/],
    ['TRUSTED_ISSUERS', '[{"issuer": "https://ci.example", "jwks_uri": "https://ci.example/jwks", "audience": "sts", "aud": "x"}]', /^TRUSTED_ISSUERS: \[0\]: unknown member "aud"$/],
    ['PARTNER_DOMAINS', '[{"issuer": "https://as.partner.example", "jwks": {"keys": []}}]', /^PARTNER_DOMAINS: \[0\]\.jwks\.keys: must not be empty$/],
    ['PORT', 'abc'],
    ['PORT', '70000', /65535/],
    ['PORT', '-1'],
    ['PORT', '80.5'],
    ['ISSUER', 'not-a-url'],
    ['ISSUER', 'https://sts.example.com/?tenant=a', /query/],
    ['ISSUER', 'https://sts.example.com/#frag', /fragment/],
    ['ISSUER', 'ftp://sts.example.com'],
    ['TRUST_DOMAIN', 'UPPER_case!'],
    ['TRUST_DOMAIN', 'Example.org'],
    ['DATABASE_URL', 'mysql://x', /postgres/],
    ['AGENT_STS_ADMIN_TOKEN', 'too-short', /32/],
    ['AGENT_STS_KEY_ENCRYPTION_KEY', 'ab'.repeat(16), /32 bytes/],
    ['AGENT_STS_KEY_ENCRYPTION_KEY', Buffer.alloc(31).toString('base64'), /32 bytes/],
    ['AGENT_STS_KEY_ENCRYPTION_KEY', Buffer.alloc(33).toString('base64url'), /32 bytes/],
    ['ACCESS_TOKEN_TTL', '0'],
    ['ACCESS_TOKEN_TTL', '-5'],
    ['ACCESS_TOKEN_TTL', 'soon'],
    ['ACCESS_TOKEN_TTL', '86401'],
    ['LOG_LEVEL', 'loud'],
    ['SIGNING_ALG', 'HS256'],
    ['SIGNING_ALG', 'none'],
    ['MAX_DELEGATION_DEPTH', '0'],
    ['TRUST_PROXY', 'yes'],
    ['SIGN_ON_THREAD_POOL', 'on', /true or false/],
    ['METRICS_ENABLED', 'on', /true or false/],
    ['METRICS_TOKEN', 'short', /32/],
    ['METRICS_TOKEN', `${'x'.repeat(32)} y`, /printable/],
    ['HEAP_GROWING_PERCENT', '0', /at least 1/],
    ['HEAP_GROWING_PERCENT', '-5'],
    ['HEAP_GROWING_PERCENT', '1001', /1000/],
    ['ANONYMOUS_REFUSAL_BURST', '-1'],
    ['ANONYMOUS_REFUSAL_RATE', '0', /at least 1/],
    ['ANONYMOUS_REFUSAL_INTERVAL', '3601', /3600/],
    ['ANONYMOUS_REFUSALS_RECORDED', 'many'],
    ['DATABASE_TIMEOUT_MS', '99', /at least 100/],
    ['DATABASE_TIMEOUT_MS', '60001', /60000/],
    ['DATABASE_TIMEOUT_MS', '1.5s'],
    ['DATABASE_TIMEOUT_MS', '1500.5', /whole number/],
  ];

  for (const [variable, value, problem] of bad) {
    it(`refuses ${variable}=${value} with a ConfigError naming the variable`, () => {
      const err = configError({ [variable]: value });
      expect(err.variable).toBe(variable);
      expect(err.message.startsWith(`${variable}: `), err.message).toBe(true);
      expect(err.message.length).toBeGreaterThan(variable.length + 2);
      expect(err.message).not.toContain('\n');
      if (problem) expect(err.message).toMatch(problem);
      // The secret values are not echoed back.
      if (variable.startsWith('AGENT_STS_') || variable === 'METRICS_TOKEN') expect(err.message).not.toContain(value);
    });
  }

  it('words every refusal itself, naming the variable, never in the schema library\'s words', () => {
    const names = ['ISSUER', 'PORT', 'HOST', 'TRUST_DOMAIN', 'DATABASE_URL', 'DATA_DIR', 'AGENT_STS_ADMIN_TOKEN', 'AGENT_STS_KEY_ENCRYPTION_KEY',
      'ACCESS_TOKEN_TTL', 'KEY_ACTIVATION_DELAY', 'SIGNING_ALG', 'MAX_DELEGATION_DEPTH', 'WIT_TTL', 'TXN_TOKEN_TTL', 'BISCUIT_TTL',
      'MAX_TXN_TOKENS_PER_TXN', 'JOIN_TOKEN_TTL', 'APPROVAL_TTL', 'APPROVAL_POLL_INTERVAL', 'TRUSTED_ISSUERS', 'PARTNER_DOMAINS',
      'DATABASE_POOL_MAX', 'HEAP_GROWING_PERCENT', 'AGENT_CACHE_TTL_MS', 'LOG_LEVEL', 'TRUST_PROXY', 'SIGN_ON_THREAD_POOL', 'METRICS_ENABLED',
      'METRICS_TOKEN', 'SSF_PUSH_RETRY_MIN_MS', 'SSF_PUSH_RETRY_MAX_MS', 'SSF_PUSH_PAUSE_AFTER', 'SSF_PUSH_TIMEOUT_MS', 'SSF_PUSH_ALLOW_HTTP',
      'SSF_POLL_MAX_WAIT_MS', 'SSF_MAX_STREAMS_PER_CLIENT', 'SSF_MIN_VERIFICATION_INTERVAL'];
    const values = ['abc', ' ', '-1', '1e3', '99999999999', '[{}]', '[1]', '{"a":1}', '[{"issuer":"x","jwks":{"keys":[{}]},"audience":"a","extra":1}]',
      '[{"issuer":"x","jwks_uri":"ftp://a","audience":"a"}]', '[{"issuer":"x","jwks_uri":"https://a","audience":[]}]'];
    let refused = 0;
    for (const name of names) {
      for (const value of values) {
        let err: unknown;
        try {
          loadConfig({ [name]: value });
        } catch (e) {
          err = e;
        }
        if (err === undefined) continue;
        refused++;
        expect(err).toBeInstanceOf(ConfigError);
        const message = (err as ConfigError).message;
        expect(message.startsWith(`${name}: `), message).toBe(true);
        expect(message, `${name}=${value}`).not.toMatch(/Invalid input|expected \w+, received|Too (small|big)|NaN|Unrecognized/);
      }
    }
    expect(refused).toBeGreaterThan(names.length * 4);
  });

  it('names the first bad variable when several are bad', () => {
    const err = configError({ PORT: 'abc', LOG_LEVEL: 'loud' });
    expect(['PORT', 'LOG_LEVEL']).toContain(err.variable);
    expect(err.message.startsWith(`${err.variable}: `)).toBe(true);
  });
});

describe('agent-sts CLI', () => {
  function run(args: string[], env: Record<string, string>) {
    const dataDir = mkdtempSync(join(tmpdir(), 'agent-sts-cli-'));
    try {
      const base: Record<string, string> = {};
      for (const k of ['PATH', 'HOME', 'SYSTEMROOT', 'TMPDIR']) if (process.env[k]) base[k] = process.env[k]!;
      return spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
        cwd: ROOT,
        env: { ...base, DATA_DIR: dataDir, ...env },
        encoding: 'utf8',
        timeout: 30_000,
      });
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }

  it('serve with PORT=abc exits 2 with one line on stderr naming PORT and the problem', () => {
    const res = run(['serve'], { PORT: 'abc' });
    expect(res.error).toBeUndefined();
    expect(res.signal).toBeNull();
    expect(res.status, res.stderr).toBe(2);
    const stderr = res.stderr;
    expect(stderr.endsWith('\n')).toBe(true);
    const lines = stderr.trimEnd().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(lines[0]).toContain('PORT');
    expect(lines[0]).toMatch(/PORT: .*(number|whole)/i);
    expect(lines[0]).toBe('agent-sts: invalid configuration: PORT: must be a whole number 0-65535');
    expect(res.stdout).toBe('');
  }, 35_000);

  /** stderr without the runtime notice oidc-provider prints on Node 20 when it is loaded. */
  const ownLines = (stderr: string) => stderr.trimEnd().split('\n').filter((l) => l && !l.startsWith('oidc-provider WARNING'));

  it('a DATABASE_URL nothing listens at: one line naming DATABASE_URL, no stack, exit 1', () => {
    const res = run(['serve'], { PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'error', DATABASE_URL: 'postgres://postgres@127.0.0.1:1/agent_sts' });
    expect(res.status, res.stderr).toBe(1);
    expect(ownLines(res.stderr), res.stderr).toEqual([expect.stringMatching(/^agent-sts: cannot reach the database at DATABASE_URL: .*ECONNREFUSED/)]);
    const output = res.stdout + res.stderr;
    expect(output).not.toMatch(/^\s+at /m);
    expect(output).not.toContain('Acquire connection error');
  }, 35_000);

  it.skipIf(!POSTGRES_URL)('a DATABASE_URL naming a database that does not exist: one line saying so, no stack, exit 1', () => {
    const url = new URL(POSTGRES_URL!);
    url.pathname = `/agent_sts_missing_${process.pid}`;
    const res = run(['serve'], { PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'error', DATABASE_URL: url.href });
    expect(res.status, res.stderr).toBe(1);
    expect(ownLines(res.stderr), res.stderr).toEqual([
      `agent-sts: cannot reach the database at DATABASE_URL: database "agent_sts_missing_${process.pid}" does not exist; create it first (createdb, or CREATE DATABASE)`,
    ]);
    expect(res.stdout + res.stderr).not.toMatch(/^\s+at /m);
  }, 35_000);

  it('an unknown command exits 2 with the usage', () => {
    const res = run(['bogus'], {});
    expect(res.error).toBeUndefined();
    expect(res.status, res.stderr).toBe(2);
    expect(res.stderr).toContain('bogus');
    expect(res.stderr).toMatch(/usage: agent-sts/);
    expect(res.stderr).toContain('serve');
    expect(res.stderr).toContain('migrate');
  }, 35_000);
});
