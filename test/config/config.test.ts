import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';

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
      databaseTimeoutMs: 3000,
    });
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

  it('treats empty optional values as unset', () => {
    const c = loadConfig({ DATABASE_URL: '', AGENT_STS_ADMIN_TOKEN: '', AGENT_STS_KEY_ENCRYPTION_KEY: '', HEAP_GROWING_PERCENT: '' });
    expect(c.databaseUrl).toBeUndefined();
    expect(c.adminToken).toBeUndefined();
    expect(c.keyEncryptionKey).toBeUndefined();
  });

  const bad: [string, string, RegExp?][] = [
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
    expect(res.stdout).toBe('');
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
