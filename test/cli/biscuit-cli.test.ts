import { cli, type CliRun as Run } from '../support/cli.js';
import type { JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { postForm } from '../support/oauth-client.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { privateJwk, publicOf } from '../support/biscuit.js';
import { BISCUIT_TOKEN_TYPE, delegate } from '../../src/tokens/biscuit.js';

const TOOL = 'https://tools.example/mcp';
const GRANTS = ['client_credentials', TOKEN_EXCHANGE];
const ISO_DATE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;



/** stderr without the runtime notices some dependencies print: one line, no stack trace. */
function oneLine(run: Run): string {
  const lines = run.stderr.trim().split('\n').filter((l) => !/Unsupported runtime/.test(l));
  expect(lines, run.stderr).toHaveLength(1);
  expect(run.stderr).not.toMatch(/^\s+at /m);
  return lines[0]!;
}

describe('agent-sts decode | verify with Biscuits', { timeout: 120_000 }, () => {
  let ts: TestServer;
  let env: Record<string, string>;
  let frontend: SecretAgent;
  let orchestrator: SecretAgent;
  let specialist: SecretAgent;
  let orchKey: JWK;
  let jwks: { keys: JWK[] };

  beforeAll(async () => {
    ts = await startTestServer();
    env = { AGENT_STS_URL: ts.url, ISSUER: '' };
    orchKey = await privateJwk();
    frontend = await registerSecretAgent(ts, { id: agentId('cli-frontend'), scopes: ['search', 'read'], audiences: [TOOL] });
    orchestrator = await registerSecretAgent(ts, {
      id: agentId('cli-orchestrator'), grant_types: GRANTS, scopes: ['search', 'read'], audiences: [TOOL], jwks: { keys: [{ ...publicOf(orchKey), alg: 'EdDSA' }] },
      token_exchange: { may_act_for_others: true, max_budget: 5000 },
    });
    specialist = await registerSecretAgent(ts, { id: agentId('cli-specialist'), grant_types: GRANTS, scopes: ['search', 'read'], audiences: [TOOL] });
    jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: JWK[] };
  });
  afterAll(async () => {
    await ts?.close();
  });

  /** A Biscuit minted for the orchestrator and delegated offline to the specialist for `search` only. */
  async function delegated(): Promise<{ minted: string; token: string }> {
    const t0 = (await frontend.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const res = await exchange(orchestrator, { subject_token: t0, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 'search read', audience: TOOL, budget: '2000' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const minted = res.body.access_token as string;
    const token = await delegate(minted, { delegate: specialist.id, tools: ['search'], budget: 1000, context: 'find the order' }, orchKey, jwks);
    return { minted, token };
  }

  it('decodes a delegated Biscuit with the issuer\'s root key: both blocks\' Datalog and the hop', async () => {
    const { token } = await delegated();
    const [run, noIssuer] = await Promise.all([
      cli(['decode', token, '--issuer', ts.url]),
      cli(['decode', token], { AGENT_STS_URL: '', ISSUER: '' }),
    ]);
    expect(run.status, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out).toMatchObject({ type: 'biscuit', blockCount: 2, signaturesVerified: true, verified: false });
    expect(out.rootKeyId).toEqual(expect.any(Number));
    expect(out.revocationIds).toHaveLength(2);
    expect(out.blocks[0].source).toContain(`holder("${orchestrator.id}")`);
    expect(out.blocks[0].source).toContain('check if time($t)');
    expect(out.blocks[1].source).toContain(`hop(1, "${orchestrator.id}", "${specialist.id}", "find the order")`);
    expect(out.chain.authority).toMatchObject({ subject: frontend.id, holder: orchestrator.id, rights: ['read', 'search'], budget: 2000 });
    expect(out.chain.authority.expires).toMatch(ISO_DATE);
    expect(out.chain.hops).toEqual([{
      index: 1, delegator: orchestrator.id, delegate: specialist.id, context: 'find the order', signedBy: 'delegator',
      rights: ['search'], audiences: [TOOL], budget: 1000, expires: out.chain.authority.expires,
    }]);
    expect(out.chain.current).toMatchObject({ holder: specialist.id, rights: ['search'] });

    // Through AGENT_STS_URL as well; without any issuer, a clear usage error.
    expect(JSON.parse((await cli(['decode', token], env)).stdout).blockCount).toBe(2);
    expect(noIssuer.status).toBe(2);
    expect(oneLine(noIssuer)).toMatch(/a Biscuit can only be decoded with its issuer's root key/);
  });

  it('decodes an expired Biscuit and says why its chain is not valid', async () => {
    const t0 = (await frontend.token({ grant_type: 'client_credentials' })).body.access_token as string;
    // Minted by a server whose clock is an hour behind: expired for everyone else.
    ts.clock.advance(-3600);
    let res;
    try {
      res = await exchange(orchestrator, { subject_token: t0, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, scope: 'read', audience: TOOL });
    } finally {
      ts.clock.advance(3600);
    }
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const run = await cli(['decode', res.body.access_token as string], env);
    expect(run.status, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout);
    expect(out).toMatchObject({ blockCount: 1, chainError: 'block 0: the token has expired' });
    expect(out.blocks[0].source).toContain('rights({"read"})');
    expect(out.chain).toBeUndefined();
  });

  it('verifies a Biscuit as a resource server would: tools, resource and spend within the chain', async () => {
    const { token } = await delegated();
    const [ok, outsideTool, overBudget, otherResource, jwtWithTool] = await Promise.all([
      cli(['verify', token, '--audience', TOOL, '--tool', 'search', '--spend', '1000'], env),
      cli(['verify', token, '--audience', TOOL, '--tool', 'read'], env),
      cli(['verify', token, '--audience', TOOL, '--tool', 'search', '--spend', '1001'], env),
      cli(['verify', token, '--audience', 'https://other.example', '--tool', 'search'], env),
      cli(['verify', 'a.b.c', '--audience', TOOL, '--tool', 'search'], env),
    ]);
    expect(ok.status, ok.stderr).toBe(0);
    const out = JSON.parse(ok.stdout);
    expect(out).toMatchObject({
      valid: true, type: 'biscuit', subject: frontend.id, holder: specialist.id, clientId: specialist.id, actors: [specialist.id, orchestrator.id],
      scopes: ['search'], budget: 1000, audiences: [TOOL], request: { tools: ['search'], resource: TOOL, spend: 1000 },
      hops: [{ index: 1, delegator: orchestrator.id, delegate: specialist.id, context: 'find the order', signedBy: 'delegator' }],
    });
    expect(out.txn).toEqual(expect.any(String));
    expect(out.expiresAt).toBeGreaterThan(Date.now() / 1000);
    expect(out.expires).toMatch(ISO_DATE);

    expect(outsideTool.status).toBe(1);
    expect(oneLine(outsideTool)).toMatch(/invalid: Biscuit: block 1: the token does not allow "read"/);
    expect(overBudget.status).toBe(1);
    expect(oneLine(overBudget)).toMatch(/block 1: spending 1001 exceeds the budget of 1000/);
    expect(otherResource.status).toBe(1);
    expect(oneLine(otherResource)).toMatch(/block 1: the token is not for "https:\/\/other.example"/);
    expect(jwtWithTool.status).toBe(2);
    expect(oneLine(jwtWithTool)).toMatch(/--tool and --spend apply to Biscuits only/);
  });

  it('refuses a Biscuit its holder revoked', async () => {
    const { minted, token } = await delegated();
    const revoked = await postForm(`${ts.url}/token/revocation`, { token }, specialist.auth);
    expect(revoked.status).toBe(200);
    const [run, parent] = await Promise.all([
      cli(['verify', token, '--audience', TOOL, '--tool', 'search'], env),
      cli(['verify', minted, '--audience', TOOL, '--tool', 'read'], env),
    ]);
    expect(run.status).toBe(1);
    expect(oneLine(run)).toMatch(/invalid: Biscuit: block 1: the token, or a token it was delegated from, has been revoked/);
    // The token it was delegated from stays valid.
    expect(parent.status, parent.stderr).toBe(0);
  });

  it('reports garbage and tampered tokens on one line, without a stack trace', async () => {
    const { token } = await delegated();
    const middle = Math.floor(token.length / 2);
    const tampered = `${token.slice(0, middle)}${token[middle] === 'A' ? 'B' : 'A'}${token.slice(middle + 1)}`;
    const runs = await Promise.all([
      cli(['decode', 'not-a-token'], env),
      cli(['decode', 'CAcSgarbage', '--issuer', ts.url]),
      cli(['decode', tampered], env),
      cli(['verify', 'CAcSgarbage', '--audience', TOOL], env),
      cli(['verify', tampered, '--audience', TOOL, '--tool', 'search'], env),
      cli(['verify', token, '--audience', TOOL, '--spend', 'lots'], env),
    ]);
    for (const run of runs) {
      expect([1, 2], run.stderr).toContain(run.status);
      expect(oneLine(run)).toMatch(/^agent-sts: /);
      expect(run.stdout).toBe('');
    }
    const [notToken, garbage, tamperedDecode, garbageVerify, tamperedVerify, badSpend] = runs.map(oneLine);
    expect(notToken).toMatch(/not a JWT .* nor a Biscuit/);
    expect(garbage).toMatch(/cannot decode the Biscuit: /);
    expect(tamperedDecode).toMatch(/cannot decode the Biscuit: /);
    expect(garbageVerify).toMatch(/invalid: Biscuit: /);
    expect(tamperedVerify).toMatch(/invalid: Biscuit: /);
    expect(badSpend).toMatch(/--spend must be a non-negative integer/);
  });
});
