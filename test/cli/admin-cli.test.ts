import { cli } from '../support/cli.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, agentId, startTestServer, type TestServer } from '../support/test-server.js';


describe('agent-sts agents | keys | token | decode', () => {
  let ts: TestServer;
  let env: Record<string, string>;
  beforeAll(async () => {
    ts = await startTestServer();
    env = { AGENT_STS_URL: ts.url, AGENT_STS_ADMIN_TOKEN: ADMIN_TOKEN };
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('registers, lists, shows and disables an agent, gets a token and decodes it', async () => {
    const id = agentId('cli');
    const added = await cli(['agents', 'add', '--id', id, '--scope', 'read', '--audience', 'https://api.example.com'], env);
    expect(added.status, added.stderr).toBe(0);
    const { client_secret: secret } = JSON.parse(added.stdout) as { client_secret: string };
    expect(JSON.parse((await cli(['agents', 'list'], env)).stdout).agents.map((a: { id: string }) => a.id)).toContain(id);
    expect(JSON.parse((await cli(['agents', 'show', id], env)).stdout)).toMatchObject({ id, scopes: ['read'] });

    const token = await cli(['token', '--id', id, `--secret=${secret}`], env);
    expect(token.status, token.stderr).toBe(0);
    const fromEnv = await cli(['token', '--id', id], { ...env, AGENT_STS_CLIENT_SECRET: secret });
    expect(fromEnv.status, fromEnv.stderr).toBe(0);
    const at = JSON.parse(token.stdout).access_token as string;
    const decoded = JSON.parse((await cli(['decode', at])).stdout);
    expect(decoded).toMatchObject({ header: { typ: 'at+jwt' }, claims: { sub: id, scope: 'read' }, verified: false });

    const verified = await cli(['verify', at, '--audience', 'https://api.example.com'], env);
    expect(verified.status, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ valid: true, type: 'access_token', subject: id, scopes: ['read'] });
    const otherAud = await cli(['verify', at, '--audience', 'https://other.example'], env);
    expect(otherAud.status).toBe(1);
    expect(otherAud.stderr).toMatch(/invalid: access token: meant for another audience/);
    const tampered = `${at.slice(0, -4)}AAAA`;
    expect((await cli(['verify', tampered, '--audience', 'https://api.example.com'], env)).stderr).toMatch(/signature is not valid/);

    const rotated = await cli(['keys', 'rotate'], env);
    expect(JSON.parse(rotated.stdout).created).toHaveLength(3);
    expect(JSON.parse((await cli(['keys', 'list'], env)).stdout).keys.length).toBeGreaterThanOrEqual(6);

    expect(JSON.parse((await cli(['agents', 'disable', id], env)).stdout).agent.status).toBe('disabled');
    const refused = await cli(['token', '--id', id, `--secret=${secret}`], env);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/401 invalid_client/);
  });

  it('finds the server as the server finds its issuer: without AGENT_STS_URL and ISSUER, at http://localhost:<PORT>', async () => {
    const listed = await cli(['agents', 'list'], { PORT: new URL(ts.url).port, AGENT_STS_ADMIN_TOKEN: ADMIN_TOKEN, AGENT_STS_URL: '', ISSUER: '' });
    expect(listed.status, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toHaveProperty('agents');
  }, 30_000);

  it('verify --issuer with a URL that is not the server\'s issuer names both issuers', async () => {
    // The server answers at localhost too, but its issuer is the 127.0.0.1 URL.
    const elsewhere = ts.issuer.replace('127.0.0.1', 'localhost');
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const token = `${b64({ typ: 'at+jwt', alg: 'EdDSA', kid: 'k' })}.${b64({ iss: elsewhere, aud: 'https://api.example.com', exp: 4102444800 })}.AA`;
    const wrongIssuer = await cli(['verify', token, '--audience', 'https://api.example.com', '--issuer', elsewhere], env);
    expect(wrongIssuer.status).toBe(1);
    expect(wrongIssuer.stderr).toContain(`authorization server metadata names another issuer: "${ts.issuer}", expected "${elsewhere}"`);
  }, 30_000);

  it('exits 2 on usage errors and 1 on refusals, with one clear line', async () => {
    expect((await cli(['agents', 'frobnicate'], env)).status).toBe(2);
    expect((await cli(['agents', 'add'], env)).status).toBe(2);
    expect((await cli(['decode', 'nope'])).status).toBe(2);
    const bad = await cli(['agents', 'add', '--id', 'spiffe://elsewhere.example/a'], env);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim().split('\n').filter((l) => !/Unsupported runtime/.test(l))).toHaveLength(1);
    expect(bad.stderr).toMatch(/400 invalid_request: id: trust domain elsewhere.example/);
    const wrongToken = await cli(['agents', 'list'], { ...env, AGENT_STS_ADMIN_TOKEN: 'x'.repeat(40) });
    expect(wrongToken.status).toBe(1);
    expect(wrongToken.stderr).toMatch(/401/);
  });
});
