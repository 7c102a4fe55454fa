import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JWK } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { AT, exchange, registerSecretAgent, TOKEN_EXCHANGE, type SecretAgent } from '../support/agents.js';
import { BISCUIT_TOKEN_TYPE, biscuitRootKeys, verifyBiscuit } from '../../src/tokens/biscuit.js';
import { rootKeyIdOfToken } from '../../src/tokens/biscuit-keys.js';

const TOOL = 'https://tools.example/mcp';

/** The Biscuit root key rotates with the signing keys; tokens under the old root keep working while they live. */
describe('Biscuit root key rotation', () => {
  let ts: TestServer;
  let holder: SecretAgent;
  let next: SecretAgent;

  beforeAll(async () => {
    ts = await startTestServer();
    holder = await registerSecretAgent(ts, { id: agentId('holder'), grant_types: ['client_credentials', TOKEN_EXCHANGE], scopes: ['read'], audiences: [TOOL] });
    next = await registerSecretAgent(ts, { id: agentId('next'), scopes: ['read'], audiences: [TOOL] });
  });
  afterAll(async () => {
    await ts?.close();
  });

  const jwks = async () => (await (await fetch(`${ts.url}/jwks`)).json()) as { keys: JWK[] };
  const mint = async () => {
    const own = (await holder.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const res = await exchange(holder, { subject_token: own, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.access_token as string;
  };
  const verify = async (token: string) => verifyBiscuit(token, { rootKeys: biscuitRootKeys(await jwks()), request: { tools: ['read'], resource: TOOL, now: new Date() } });

  it('mints under the new root after a rotation, keeps the old root published, and delegates old tokens under their own root', async () => {
    const before = await mint();
    const oldRoot = rootKeyIdOfToken(before)!;
    expect((await ts.admin('POST', '/admin/keys/rotate')).status).toBe(200);
    const after = await mint();
    const newRoot = rootKeyIdOfToken(after)!;
    expect(newRoot).not.toBe(oldRoot);
    expect([...biscuitRootKeys(await jwks()).keys()].sort()).toEqual([oldRoot, newRoot].sort());
    await expect(verify(before)).resolves.toMatchObject({ rootKeyId: oldRoot });
    await expect(verify(after)).resolves.toMatchObject({ rootKeyId: newRoot });

    // The issuer appends a delegation to the old token with the old root's key.
    const nextOwn = (await next.token({ grant_type: 'client_credentials' })).body.access_token as string;
    const delegated = await exchange(holder, {
      subject_token: before, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE,
      actor_token: nextOwn, actor_token_type: AT, context: 'carry on',
    });
    expect(delegated.status, JSON.stringify(delegated.body)).toBe(200);
    await expect(verify(delegated.body.access_token)).resolves.toMatchObject({ rootKeyId: oldRoot, hops: [{ signedBy: 'issuer', delegate: next.id }] });
  });
});

