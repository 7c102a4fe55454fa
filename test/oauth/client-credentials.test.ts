import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeProtectedHeader, calculateJwkThumbprint } from 'jose';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';
import { agentKeyPair, basic, client, discover, postForm, verifyAccessToken } from '../support/oauth-client.js';

const API = 'https://api.example.com';
const OTHER_API = 'https://tools.example.com/mcp';

describe('client credentials with JWT agent access tokens', () => {
  let ts: TestServer;

  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.close();
  });

  async function register(body: Record<string, unknown>) {
    const res = await ts.admin('POST', '/admin/agents', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body as { agent: { id: string }; client_secret?: string };
  }

  it('issues RFC 9068 tokens to a client_secret_basic agent, verifiable from the discovered jwks_uri', async () => {
    const id = agentId('basic');
    const { client_secret } = await register({ id, scopes: ['tools:read', 'tools:write'], audiences: [API, OTHER_API] });
    expect(client_secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const config = await discover(ts.issuer, id, client.ClientSecretBasic(client_secret!));
    const tokens = await client.clientCredentialsGrant(config, { scope: 'tools:read', resource: OTHER_API });
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.expires_in).toBe(300);
    expect(tokens.refresh_token).toBeUndefined();

    const { payload, protectedHeader } = await verifyAccessToken(config, tokens.access_token, OTHER_API);
    expect(protectedHeader).toMatchObject({ typ: 'at+jwt', alg: 'EdDSA' });
    expect(protectedHeader.kid).toEqual(expect.any(String));
    expect(payload).toMatchObject({ iss: ts.issuer, sub: id, client_id: id, aud: OTHER_API, scope: 'tools:read' });
    expect(payload.exp! - payload.iat!).toBe(300);
    expect(payload.jti).toEqual(expect.any(String));
  });

  it('uses the first registered audience and all allowed scopes when none are asked for', async () => {
    const id = agentId('defaults');
    const { client_secret } = await register({ id, scopes: ['a', 'b'], audiences: [API, OTHER_API] });
    const config = await discover(ts.issuer, id, client.ClientSecretBasic(client_secret!));
    const tokens = await client.clientCredentialsGrant(config);
    const { payload } = await verifyAccessToken(config, tokens.access_token, API);
    expect(payload.scope).toBe('a b');
  });

  it('issues tokens to a client_secret_post agent', async () => {
    const id = agentId('post');
    const { client_secret } = await register({ id, scopes: ['x'], audiences: [API], token_endpoint_auth_method: 'client_secret_post' });
    const config = await discover(ts.issuer, id, client.ClientSecretPost(client_secret!));
    const tokens = await client.clientCredentialsGrant(config, { scope: 'x' });
    const { payload } = await verifyAccessToken(config, tokens.access_token, API);
    expect(payload.sub).toBe(id);

    // A wrong secret is refused whichever way it is sent.
    const wrong = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: id, client_secret: `${client_secret}x` });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toBe('invalid_client');
  });

  for (const alg of ['EdDSA', 'ES256'] as const) {
    it(`issues tokens to a private_key_jwt agent (${alg} assertion) and refuses a replayed assertion`, async () => {
      const id = agentId(`pkjwt-${alg.toLowerCase()}`);
      const keys = await agentKeyPair(alg);
      const reg = await register({ id, scopes: ['read'], audiences: [API], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.jwk] } });
      expect(reg.client_secret).toBeUndefined();

      let assertion: string | undefined;
      const config = await discover(ts.issuer, id, client.PrivateKeyJwt(keys.privateKey, {
        [client.modifyAssertion]: (_header: unknown, _payload: unknown) => {},
      } as never));
      // Capture the assertion openid-client sends, to replay it.
      const realFetch = globalThis.fetch;
      config[client.customFetch] = async (url, options) => {
        const body = new URLSearchParams(options.body as string);
        assertion = body.get('client_assertion') ?? undefined;
        return realFetch(url, options as RequestInit);
      };
      const tokens = await client.clientCredentialsGrant(config, { scope: 'read' });
      const { payload, protectedHeader } = await verifyAccessToken(config, tokens.access_token, API);
      expect(protectedHeader.typ).toBe('at+jwt');
      expect(payload).toMatchObject({ sub: id, client_id: id, scope: 'read' });
      expect(assertion).toBeDefined();

      const replay = await postForm(`${ts.url}/token`, {
        grant_type: 'client_credentials',
        client_id: id,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion!,
      });
      expect(replay.status).toBe(401);
      expect(replay.body.error).toBe('invalid_client');
      expect(replay.body.error_description).toBeDefined();
    });
  }

  it('refuses an assertion signed by a key the agent did not register', async () => {
    const id = agentId('pkjwt-wrong-key');
    const registered = await agentKeyPair('EdDSA');
    const other = await agentKeyPair('EdDSA');
    await register({ id, audiences: [API], token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [registered.jwk] } });
    const config = await discover(ts.issuer, id, client.PrivateKeyJwt(other.privateKey));
    await expect(client.clientCredentialsGrant(config)).rejects.toMatchObject({ error: 'invalid_client' });
  });

  it('binds tokens to a DPoP key when the client sends a proof, and requires one for dpop-bound agents', async () => {
    const id = agentId('dpop');
    const { client_secret } = await register({ id, scopes: ['s'], audiences: [API], dpop_bound_access_tokens: true });
    const config = await discover(ts.issuer, id, client.ClientSecretBasic(client_secret!));

    const noProof = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, client_secret!) });
    expect(noProof.status).toBe(400);
    expect(noProof.body.error).toBe('invalid_grant');
    expect(noProof.body.error_description).toMatch(/DPoP/);

    const dpopKeys = await client.randomDPoPKeyPair('EdDSA');
    const tokens = await client.clientCredentialsGrant(config, {}, { DPoP: client.getDPoPHandle(config, dpopKeys) });
    expect(tokens.token_type.toLowerCase()).toBe('dpop');
    const { payload } = await verifyAccessToken(config, tokens.access_token, API);
    const jkt = await calculateJwkThumbprint(await crypto.subtle.exportKey('jwk', dpopKeys.publicKey) as never);
    expect((payload.cnf as { jkt: string }).jkt).toBe(jkt);

    const intro = await postForm(`${ts.url}/token/introspection`, { token: tokens.access_token }, { authorization: basic(id, client_secret!) });
    expect(intro.body).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt } });
  });

  it('binds a token with DPoP for an agent that is not required to use it', async () => {
    const id = agentId('dpop-optional');
    const { client_secret } = await register({ id, audiences: [API] });
    const config = await discover(ts.issuer, id, client.ClientSecretBasic(client_secret!));
    const dpopKeys = await client.randomDPoPKeyPair('ES256');
    const tokens = await client.clientCredentialsGrant(config, {}, { DPoP: client.getDPoPHandle(config, dpopKeys) });
    expect(tokens.token_type.toLowerCase()).toBe('dpop');
    expect(decodeProtectedHeader(tokens.access_token).typ).toBe('at+jwt');
  });
});
