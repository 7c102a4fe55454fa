import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeProtectedHeader } from 'jose';
import { loadConfig } from '../../src/config/config.js';
import { startServer } from '../../src/http/server.js';
import { createLogger } from '../../src/log/logger.js';
import { agentId, POSTGRES_URL, startTestServer, TestDatabase, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';

const API = 'https://api.example.com';
const KEK = 'a'.repeat(64);

async function tokenFor(ts: TestServer, id: string, secret: string) {
  return postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, secret) });
}

describe('restart persistence', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('keeps agents, keys, token records and revocations across a restart', async () => {
    const id = agentId('persistent');
    const secret = (await ts.admin('POST', '/admin/agents', { id, audiences: [API], scopes: ['s'] })).body.client_secret as string;
    const kept = (await tokenFor(ts, id, secret)).body.access_token as string;
    const revoked = (await tokenFor(ts, id, secret)).body.access_token as string;
    expect((await postForm(`${ts.url}/token/revocation`, { token: revoked }, { authorization: basic(id, secret) })).status).toBe(200);
    await ts.admin('POST', '/admin/keys/rotate');
    const jwksBefore = await (await fetch(`${ts.url}/jwks`)).json();
    const signedBefore = (await tokenFor(ts, id, secret)).body.access_token as string;

    await ts.restart();

    expect(await (await fetch(`${ts.url}/jwks`)).json()).toEqual(jwksBefore);
    const introspect = (t: string) => postForm(`${ts.url}/token/introspection`, { token: t }, { authorization: basic(id, secret) });
    expect((await introspect(kept)).body.active).toBe(true);
    expect((await introspect(revoked)).body).toStrictEqual({ active: false });
    const after = await tokenFor(ts, id, secret);
    expect(after.status).toBe(200);
    expect(decodeProtectedHeader(after.body.access_token).kid).toBe(decodeProtectedHeader(signedBefore).kid);
    expect((await ts.admin('GET', `/admin/agents/${encodeURIComponent(id)}`)).body.scopes).toEqual(['s']);
  });

  it('withholds the token and answers 503 when its record cannot be written', async () => {
    const id = agentId('unrecorded');
    const secret = (await ts.admin('POST', '/admin/agents', { id, audiences: [API] })).body.client_secret as string;
    const knex = ts.server.db.knex;
    await knex.schema.renameTable('issued_tokens', 'issued_tokens_away');
    try {
      const res = await tokenFor(ts, id, secret);
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ error: 'temporarily_unavailable', error_description: expect.any(String) });
      expect(JSON.stringify(res.body)).not.toMatch(/eyJ/);
    } finally {
      await knex.schema.renameTable('issued_tokens_away', 'issued_tokens');
    }
    const events = await ts.admin('GET', `/admin/events?client_id=${encodeURIComponent(id)}&decision=refused`);
    expect(events.body.events[0]).toMatchObject({ reason: 'temporarily_unavailable' });
    expect((await tokenFor(ts, id, secret)).status).toBe(200);
  });

  it('applies migrations once; a second run changes nothing', async () => {
    expect(await ts.server.db.migrate()).toEqual([]);
  });
});

describe('private keys at rest', () => {
  it('are encrypted with AGENT_STS_KEY_ENCRYPTION_KEY, and the server refuses to start without the right key', async () => {
    const ts = await startTestServer({ AGENT_STS_KEY_ENCRYPTION_KEY: KEK });
    try {
      const rows = await ts.server.db.knex('signing_keys').select('private_jwk', 'encrypted');
      expect(rows.length).toBe(3);
      for (const row of rows) {
        expect(row.encrypted).toBe(true);
        expect(row.private_jwk).toMatch(/^aes256gcm-v1\./);
        expect(row.private_jwk).not.toMatch(/"d"/);
      }
      await ts.stop();
      await expect(ts.restart({ AGENT_STS_KEY_ENCRYPTION_KEY: '' })).rejects.toThrow(/AGENT_STS_KEY_ENCRYPTION_KEY/);
      await expect(ts.restart({ AGENT_STS_KEY_ENCRYPTION_KEY: 'b'.repeat(64) })).rejects.toThrow(/cannot be decrypted/);
      await ts.restart({ AGENT_STS_KEY_ENCRYPTION_KEY: KEK });
      expect((await fetch(`${ts.url}/readyz`)).status).toBe(200);
    } finally {
      await ts.close();
    }
  });

  it('warns loudly when stored unencrypted', async () => {
    const ts = await startTestServer();
    try {
      expect(ts.logs.join('')).toMatch(/UNENCRYPTED/);
    } finally {
      await ts.close();
    }
  });
});

describe.skipIf(!!POSTGRES_URL)('embedded database data directory', () => {
  it('refuses a second server on the same data directory', async () => {
    const ts = await startTestServer();
    try {
      const config = loadConfig({ DATA_DIR: ts.db.dataDir, PORT: '0', HOST: '127.0.0.1', AGENT_STS_ADMIN_TOKEN: 'x'.repeat(40), LOG_LEVEL: 'silent' });
      await expect(startServer(config, { logger: createLogger('silent'), keyRefreshMs: 0 })).rejects.toThrow(/in use by another agent-sts server/);
      // Another process too.
      const child = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve'], {
        env: { ...process.env, DATA_DIR: ts.db.dataDir, PORT: '0', LOG_LEVEL: 'silent', DATABASE_URL: '' },
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(child.status).toBe(1);
      expect(child.stderr).toMatch(/in use by another agent-sts server/);
      // The first server is unharmed.
      expect((await fetch(`${ts.url}/readyz`)).status).toBe(200);
    } finally {
      await ts.close();
    }
  });
});

describe('npm run migrate', () => {
  it('migrates a fresh database, then reports it up to date', async () => {
    const db = new TestDatabase();
    await db.create();
    try {
      const env = { ...process.env, DATA_DIR: db.dataDir, DATABASE_URL: db.url ?? '' };
      const run = () => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'migrate'], { env, encoding: 'utf8', timeout: 60_000 });
      const first = run();
      expect(first.status, first.stderr).toBe(0);
      expect(first.stdout).toMatch(/applied: 001_foundation/);
      const second = run();
      expect(second.status, second.stderr).toBe(0);
      expect(second.stdout).toMatch(/up to date/);
    } finally {
      await db.drop();
    }
    // Two processes of up to 60 s each (tsx compiles the CLI at each start).
  }, 150_000);
});
