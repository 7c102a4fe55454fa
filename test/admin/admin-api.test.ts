import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { ADMIN_TOKEN, TRUST_DOMAIN, agentId, enc, startTestServer, type TestServer } from '../support/test-server.js';
import { agentKeyPair, basic, postForm } from '../support/oauth-client.js';

const API = 'https://api.example.com';
const OTHER_API = 'https://tools.example.com/mcp';

interface Registered {
  agent: Record<string, any> & { id: string };
  client_secret?: string;
}

/** Every key name anywhere in a JSON value. */
function allKeys(value: unknown, into: string[] = []): string[] {
  if (Array.isArray(value)) {
    for (const v of value) allKeys(v, into);
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      into.push(k);
      allKeys(v, into);
    }
  }
  return into;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('base64url');

describe('admin API', () => {
  let ts: TestServer;

  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.close();
  });

  async function register(body: Record<string, unknown>): Promise<Registered> {
    const res = await ts.admin('POST', '/admin/agents', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body as Registered;
  }

  async function token(id: string, secret: string, form: Record<string, string> = {}) {
    return postForm(`${ts.url}/token`, { grant_type: 'client_credentials', ...form }, { authorization: basic(id, secret) });
  }

  async function issue(id: string, secret: string, form: Record<string, string> = {}): Promise<string> {
    const res = await token(id, secret, form);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.access_token).toEqual(expect.any(String));
    return res.body.access_token as string;
  }

  /** An active agent whose credentials introspect other agents' tokens. */
  let introspector: { id: string; secret: string } | undefined;
  async function introspect(accessToken: string) {
    if (!introspector) {
      const id = agentId('introspector');
      const reg = await register({ id, audiences: [API] });
      introspector = { id, secret: reg.client_secret! };
    }
    const res = await postForm(`${ts.url}/token/introspection`, { token: accessToken }, { authorization: basic(introspector.id, introspector.secret) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body as Record<string, unknown>;
  }

  function expectApiError(res: { status: number; body: any }, status: number, error: string, description?: RegExp) {
    expect(res.status, JSON.stringify(res.body)).toBe(status);
    expect(res.body).toEqual({ error, error_description: expect.any(String) });
    if (description) expect(res.body.error_description).toMatch(description);
  }

  describe('authentication', () => {
    const routes: [string, string][] = [
      ['GET', '/admin/agents'],
      ['POST', '/admin/agents'],
      ['GET', `/admin/agents/${enc(agentId('x'))}`],
      ['POST', '/admin/keys/rotate'],
      ['GET', '/admin/keys'],
      ['GET', '/admin/tokens'],
      ['GET', '/admin/events'],
      ['GET', '/admin/whatever'],
      ['DELETE', '/admin/whatever/deeper'],
      ['GET', '/admin'],
    ];

    for (const [method, path] of routes) {
      it(`${method} ${path} without a token is 401 with WWW-Authenticate: Bearer`, async () => {
        const res = await fetch(`${ts.url}${path}`, { method });
        expect(res.status).toBe(401);
        expect(res.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
        const body = await res.json();
        expect(body).toEqual({ error: expect.any(String), error_description: expect.any(String) });
      });

      it(`${method} ${path} with a wrong token or another scheme is 401`, async () => {
        for (const authorization of [`Bearer ${ADMIN_TOKEN}x`, 'Bearer wrong', `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`, `Basic ${ADMIN_TOKEN}`, ADMIN_TOKEN]) {
          const res = await fetch(`${ts.url}${path}`, { method, headers: { authorization } });
          expect(res.status, authorization).toBe(401);
          expect(res.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
          const body = await res.json();
          expect(body).toEqual({ error: expect.any(String), error_description: expect.any(String) });
        }
      });
    }

    it('did not rotate keys or register anything for the unauthenticated requests', async () => {
      const keys = await ts.admin('GET', '/admin/keys');
      expect(keys.body.keys).toHaveLength(3);
      const agent = await ts.admin('GET', `/admin/agents/${enc(agentId('x'))}`);
      expect(agent.status).toBe(404);
    });

    it('an unknown /admin path with the admin token is a 404 JSON error', async () => {
      expectApiError(await ts.admin('GET', '/admin/whatever'), 404, 'not_found');
    });
  });

  describe('registration', () => {
    it('registers with defaults, returns the secret once, with a Location header and no secret hash', async () => {
      const id = agentId('reg-defaults');
      const res = await ts.admin('POST', '/admin/agents', { id });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.headers.get('location')).toBe(`/admin/agents/${enc(id)}`);
      expect(JSON.stringify(res.body)).not.toContain('client_secret_hash');
      expect(allKeys(res.body)).not.toContain('client_secret_hash');
      expect(res.body.client_secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(res.body.agent).toMatchObject({
        id,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        max_delegation_depth: 3,
        dpop_bound_access_tokens: false,
        scopes: [],
        audiences: [],
        agent_checksums: [],
        jwks: null,
        status: 'active',
        disabled_at: null,
      });
      expect(res.body.agent.created_at).toEqual(expect.any(String));
      expect(res.body.agent.updated_at).toEqual(expect.any(String));

      const got = await ts.admin('GET', `/admin/agents/${enc(id)}`);
      expect(got.status).toBe(200);
      expect(got.body).toEqual(res.body.agent);
    });

    it('registers a wimse:// id', async () => {
      const id = `wimse://${TRUST_DOMAIN}/ns/prod/agent-1`;
      const reg = await register({ id });
      expect(reg.agent.id).toBe(id);
    });

    it('registers a private_key_jwt agent with jwks and no client secret', async () => {
      const id = agentId('reg-pkjwt');
      const keys = await agentKeyPair('ES256');
      const res = await ts.admin('POST', '/admin/agents', { id, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.jwk] }, audiences: [API] });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.client_secret).toBeUndefined();
      expect(allKeys(res.body)).not.toContain('client_secret');
      expect(allKeys(res.body)).not.toContain('client_secret_hash');
      expect(res.body.agent.token_endpoint_auth_method).toBe('private_key_jwt');
      expect(res.body.agent.jwks).toEqual({ keys: [keys.jwk] });
    });

    it('the one-time secret works at /token, and the agent record never shows it again', async () => {
      const id = agentId('reg-secret-works');
      const reg = await register({ id, scopes: ['tools:read'], audiences: [API, OTHER_API], token_endpoint_auth_method: 'client_secret_post' });
      const secret = reg.client_secret!;
      const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: id, client_secret: secret, resource: OTHER_API });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const claims = decodeJwt(res.body.access_token);
      expect(claims).toMatchObject({ sub: id, client_id: id, aud: OTHER_API, scope: 'tools:read' });

      const got = await ts.admin('GET', `/admin/agents/${enc(id)}`);
      expect(got.status).toBe(200);
      const text = JSON.stringify(got.body);
      expect(text).not.toContain(secret);
      expect(allKeys(got.body)).not.toContain('client_secret');
      expect(allKeys(got.body)).not.toContain('client_secret_hash');
      const list = await ts.admin('GET', '/admin/agents?limit=1000');
      expect(JSON.stringify(list.body)).not.toContain(secret);
      expect(allKeys(list.body)).not.toContain('client_secret_hash');
    });

    const bad: [string, unknown, RegExp][] = [
      ['an unknown field', { id: agentId('bad-unknown'), colour: 'blue' }, /colour/],
      ['a missing id', { scopes: ['a'] }, /\bid\b/],
      ['a non-string id', { id: 42 }, /\bid\b/],
      ['an https id', { id: 'https://agent-sts.test/agents/a' }, /\bid\b/],
      ['an id that is not a URI', { id: 'agent-a' }, /\bid\b/],
      ['an id with a query', { id: `${agentId('q')}?x=1` }, /\bid\b/],
      ['an id with a fragment', { id: `${agentId('f')}#frag` }, /\bid\b/],
      ['an id with a port', { id: `spiffe://${TRUST_DOMAIN}:8443/agents/p` }, /\bid\b.*port/],
      ['an id with userinfo', { id: `spiffe://user@${TRUST_DOMAIN}/agents/u` }, /\bid\b.*userinfo/],
      ['an id with an empty path', { id: `spiffe://${TRUST_DOMAIN}` }, /\bid\b.*path/],
      ['an id with path /', { id: `spiffe://${TRUST_DOMAIN}/` }, /\bid\b.*path/],
      ['an id with a .. segment', { id: `spiffe://${TRUST_DOMAIN}/agents/../admin` }, /\bid\b/],
      ['an id with a trailing slash', { id: `${agentId('trailing')}/` }, /\bid\b.*slash/],
      ['an id with an empty segment', { id: `spiffe://${TRUST_DOMAIN}/agents//a` }, /\bid\b/],
      ['an id with an upper-case trust domain', { id: 'spiffe://Agent-STS.test/agents/a' }, /\bid\b/],
      ['an id of a foreign trust domain', { id: 'spiffe://other.example/agents/a' }, /\bid\b.*trust domain.*other\.example/],
      ['private_key_jwt without jwks', { id: agentId('bad-pk'), token_endpoint_auth_method: 'private_key_jwt' }, /jwks/],
      ['jwks with a garbage key', { id: agentId('bad-jwks-garbage'), jwks: { keys: [{ kty: 'EC', crv: 'P-256', x: 'abc', y: 'def' }] } }, /jwks/],
      ['jwks with an RSA key whose modulus is 65537', { id: agentId('bad-jwks-rsa-tiny'), token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ kty: 'RSA', n: 'AQAB', e: 'AQAB' }] } }, /jwks/],
      ['jwks with an unknown kty', { id: agentId('bad-jwks-kty'), jwks: { keys: [{ kty: 'oct', k: 'AAAA' }] } }, /jwks/],
      ['jwks with no keys', { id: agentId('bad-jwks-empty'), jwks: { keys: [] } }, /jwks/],
      ['jwks that is not an object', { id: agentId('bad-jwks-string'), jwks: 'keys' }, /jwks/],
      ['a scope with a space', { id: agentId('bad-scope-space'), scopes: ['tools read'] }, /scopes/],
      ['a scope with a quote', { id: agentId('bad-scope-quote'), scopes: ['tools"read'] }, /scopes/],
      ['an empty scope', { id: agentId('bad-scope-empty'), scopes: [''] }, /scopes/],
      ['scopes that are not an array', { id: agentId('bad-scope-string'), scopes: 'a b' }, /scopes/],
      ['duplicate scopes', { id: agentId('bad-scope-dup'), scopes: ['a', 'b', 'a'] }, /scopes/],
      ['a relative audience', { id: agentId('bad-aud-rel'), audiences: ['api.example.com/x'] }, /audiences/],
      ['an audience with a fragment', { id: agentId('bad-aud-frag'), audiences: ['https://api.example.com/#x'] }, /audiences/],
      ['duplicate audiences', { id: agentId('bad-aud-dup'), audiences: [API, API] }, /audiences/],
      ['max_delegation_depth above the server maximum', { id: agentId('bad-depth-6'), max_delegation_depth: 6 }, /max_delegation_depth/],
      ['a negative max_delegation_depth', { id: agentId('bad-depth-neg'), max_delegation_depth: -1 }, /max_delegation_depth/],
      ['a fractional max_delegation_depth', { id: agentId('bad-depth-frac'), max_delegation_depth: 1.5 }, /max_delegation_depth/],
      ['a string max_delegation_depth', { id: agentId('bad-depth-str'), max_delegation_depth: '2' }, /max_delegation_depth/],
      ['a bad agent checksum', { id: agentId('bad-checksum'), agent_checksums: ['not-a-sha256'] }, /agent_checksums/],
      ['token_endpoint_auth_method none', { id: agentId('bad-method-none'), token_endpoint_auth_method: 'none' }, /token_endpoint_auth_method/],
      ['grant_types with authorization_code', { id: agentId('bad-grant-code'), grant_types: ['authorization_code'] }, /grant_types/],
      ['empty grant_types', { id: agentId('bad-grant-empty'), grant_types: [] }, /grant_types/],
      ['a non-boolean dpop_bound_access_tokens', { id: agentId('bad-dpop'), dpop_bound_access_tokens: 'yes' }, /dpop_bound_access_tokens/],
    ];

    for (const [what, body, description] of bad) {
      it(`refuses ${what} with 400 invalid_request naming the field`, async () => {
        const res = await ts.admin('POST', '/admin/agents', body);
        expectApiError(res, 400, 'invalid_request', description);
      });
    }

    it('refuses jwks holding a private key', async () => {
      const { privateKey, jwk } = await agentKeyPair('EdDSA');
      const { exportJWK } = await import('jose');
      const priv = { ...(await exportJWK(privateKey)), kid: jwk.kid, alg: 'EdDSA', use: 'sig' };
      expect(priv.d).toEqual(expect.any(String));
      const res = await ts.admin('POST', '/admin/agents', { id: agentId('bad-jwks-private'), token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [priv] } });
      expectApiError(res, 400, 'invalid_request', /jwks.*private/);
      // Nor with only a `d` added to a public key.
      const res2 = await ts.admin('POST', '/admin/agents', { id: agentId('bad-jwks-private'), token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [{ ...jwk, d: priv.d }] } });
      expectApiError(res2, 400, 'invalid_request', /jwks/);
      expect((await ts.admin('GET', `/admin/agents/${enc(agentId('bad-jwks-private'))}`)).status).toBe(404);
    });

    it('accepts max_delegation_depth 0 and the server maximum', async () => {
      expect((await register({ id: agentId('depth-0'), max_delegation_depth: 0 })).agent.max_delegation_depth).toBe(0);
      expect((await register({ id: agentId('depth-5'), max_delegation_depth: 5 })).agent.max_delegation_depth).toBe(5);
    });

    for (const [what, body] of [['a JSON array', '[{"id":"spiffe://agent-sts.test/agents/arr"}]'], ['JSON null', 'null'], ['a JSON string', '"x"'], ['a JSON number', '1']] as const) {
      it(`refuses a body that is ${what} with 400`, async () => {
        const res = await ts.admin('POST', '/admin/agents', body);
        expectApiError(res, 400, 'invalid_request');
      });
    }

    for (const body of ['{', '{"id": }', '{"id": "spiffe://agent-sts.test/agents/x",}', 'not json', '']) {
      it(`refuses malformed JSON ${JSON.stringify(body)} with 400, never 500`, async () => {
        const res = await ts.admin('POST', '/admin/agents', body, { 'content-type': 'application/json' });
        expectApiError(res, 400, 'invalid_request');
      });
    }

    for (const encoding of ['gzip', 'deflate']) {
      it(`refuses a corrupt ${encoding} body with 400, never 500`, async () => {
        const res = await ts.admin('POST', '/admin/agents', 'this is not compressed', { 'content-type': 'application/json', 'content-encoding': encoding });
        expectApiError(res, 400, 'invalid_request');
      });
    }

    it('refuses a body that is not application/json with 415', async () => {
      const json = JSON.stringify({ id: agentId('text-plain') });
      expectApiError(await ts.admin('POST', '/admin/agents', json, { 'content-type': 'text/plain' }), 415, 'unsupported_media_type');
      expectApiError(await ts.admin('POST', '/admin/agents', `id=${enc(agentId('form'))}`, { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type');
      expect((await ts.admin('GET', `/admin/agents/${enc(agentId('text-plain'))}`)).status).toBe(404);
    });

    it('accepts application/json with a charset', async () => {
      const res = await ts.admin('POST', '/admin/agents', { id: agentId('charset') }, { 'content-type': 'application/json; charset=utf-8' });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    });

    it('refuses a body over 64 kB with 413', async () => {
      const body = JSON.stringify({ id: agentId('huge'), scopes: ['a'], padding: 'x'.repeat(70 * 1024) });
      const res = await ts.admin('POST', '/admin/agents', body);
      expect(res.status).toBe(413);
      expect(res.body).toEqual({ error: expect.any(String), error_description: expect.any(String) });
    });

    it('refuses a duplicate id with 409 conflict and keeps the first registration', async () => {
      const id = agentId('dup');
      const first = await register({ id, scopes: ['first'] });
      const res = await ts.admin('POST', '/admin/agents', { id, scopes: ['second'] });
      expectApiError(res, 409, 'conflict', /dup/);
      const got = await ts.admin('GET', `/admin/agents/${enc(id)}`);
      expect(got.body.scopes).toEqual(['first']);
      // The first secret still works.
      const tok = await token(id, first.client_secret!, { resource: API });
      expect(tok.status).toBe(400); // no such audience: the client authenticated, the target is refused
      expect(tok.body.error).toBe('invalid_target');
    });
  });

  describe('listing and reading agents', () => {
    beforeAll(async () => {
      for (const n of ['list-a', 'list-b', 'list-c', 'list-d', 'list-e']) await register({ id: agentId(n) });
      const del = await ts.admin('DELETE', `/admin/agents/${enc(agentId('list-c'))}`);
      expect(del.status).toBe(200);
    });

    it('lists agents, filtered by status', async () => {
      const all = await ts.admin('GET', '/admin/agents?limit=1000');
      expect(all.status).toBe(200);
      const ids = (all.body.agents as { id: string }[]).map((a) => a.id);
      expect(ids).toEqual(expect.arrayContaining([agentId('list-a'), agentId('list-c'), agentId('list-e')]));
      expect(all.body.next).toBeUndefined();

      const active = await ts.admin('GET', '/admin/agents?status=active&limit=1000');
      expect(active.status).toBe(200);
      expect(active.body.agents.every((a: { status: string }) => a.status === 'active')).toBe(true);
      expect(active.body.agents.map((a: { id: string }) => a.id)).not.toContain(agentId('list-c'));
      expect(active.body.agents.map((a: { id: string }) => a.id)).toContain(agentId('list-a'));

      const disabled = await ts.admin('GET', '/admin/agents?status=disabled');
      expect(disabled.status).toBe(200);
      expect(disabled.body.agents.every((a: { status: string }) => a.status === 'disabled')).toBe(true);
      expect(disabled.body.agents.map((a: { id: string }) => a.id)).toContain(agentId('list-c'));
    });

    it('pages with limit, next and after, covering every agent once', async () => {
      const all = (await ts.admin('GET', '/admin/agents?limit=1000')).body.agents.map((a: { id: string }) => a.id) as string[];
      expect(all.length).toBeGreaterThan(4);
      const seen: string[] = [];
      let after: string | undefined;
      for (let i = 0; i < 1000; i++) {
        const res = await ts.admin('GET', `/admin/agents?limit=2${after ? `&after=${enc(after)}` : ''}`);
        expect(res.status, JSON.stringify(res.body)).toBe(200);
        expect(res.body.agents.length).toBeLessThanOrEqual(2);
        seen.push(...res.body.agents.map((a: { id: string }) => a.id));
        if (res.body.agents.length === 2) {
          expect(res.body.next).toBe(res.body.agents[1].id);
        } else {
          expect(res.body.next).toBeUndefined();
        }
        if (!res.body.next) break;
        after = res.body.next;
      }
      expect(seen).toEqual(all);
    });

    for (const q of ['limit=0', 'limit=5000', 'limit=abc', 'limit=-1', 'limit=1.5', 'status=deleted', 'colour=blue', 'after=']) {
      it(`refuses ?${q} with 400`, async () => {
        expectApiError(await ts.admin('GET', `/admin/agents?${q}`), 400, 'invalid_request');
      });
    }

    it('reads an agent by URL-encoded id; unknown ids are a 404 JSON error', async () => {
      const got = await ts.admin('GET', `/admin/agents/${enc(agentId('list-a'))}`);
      expect(got.status).toBe(200);
      expect(got.body.id).toBe(agentId('list-a'));
      expectApiError(await ts.admin('GET', `/admin/agents/${enc(agentId('nobody'))}`), 404, 'not_found');
      expectApiError(await ts.admin('GET', '/admin/agents/nobody'), 404, 'not_found');
    });
  });

  describe('changing agents', () => {
    it('PATCH changes scopes and audiences, and new tokens reflect them', async () => {
      const id = agentId('patch');
      const reg = await register({ id, scopes: ['old'], audiences: [API] });
      const secret = reg.client_secret!;
      const before = decodeJwt(await issue(id, secret));
      expect(before).toMatchObject({ scope: 'old', aud: API });

      const res = await ts.admin('PATCH', `/admin/agents/${enc(id)}`, { scopes: ['new:a', 'new:b'], audiences: [OTHER_API] });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body).toMatchObject({ id, scopes: ['new:a', 'new:b'], audiences: [OTHER_API] });
      expect(allKeys(res.body)).not.toContain('client_secret_hash');
      expect((await ts.admin('GET', `/admin/agents/${enc(id)}`)).body).toMatchObject({ scopes: ['new:a', 'new:b'], audiences: [OTHER_API] });

      const after = decodeJwt(await issue(id, secret));
      expect(after).toMatchObject({ scope: 'new:a new:b', aud: OTHER_API });
      const narrowed = decodeJwt(await issue(id, secret, { scope: 'new:b', resource: OTHER_API }));
      expect(narrowed.scope).toBe('new:b');

      const oldScope = await token(id, secret, { scope: 'old' });
      expect(oldScope.status).toBe(400);
      expect(oldScope.body.error).toBe('invalid_scope');
      const oldAudience = await token(id, secret, { resource: API });
      expect(oldAudience.status).toBe(400);
      expect(oldAudience.body.error).toBe('invalid_target');
    });

    it('PATCH refuses unknown fields, an empty body, immutable fields and bad values', async () => {
      const id = agentId('patch-bad');
      await register({ id, scopes: ['a'] });
      const path = `/admin/agents/${enc(id)}`;
      expectApiError(await ts.admin('PATCH', path, { colour: 'blue' }), 400, 'invalid_request', /colour/);
      expectApiError(await ts.admin('PATCH', path, {}), 400, 'invalid_request');
      expectApiError(await ts.admin('PATCH', path, { token_endpoint_auth_method: 'client_secret_post' }), 400, 'invalid_request', /token_endpoint_auth_method/);
      expectApiError(await ts.admin('PATCH', path, { id: agentId('renamed') }), 400, 'invalid_request', /\bid\b/);
      expectApiError(await ts.admin('PATCH', path, { status: 'disabled' }), 400, 'invalid_request', /status/);
      expectApiError(await ts.admin('PATCH', path, { client_secret_hash: 'scrypt$1$1$1$x$y' }), 400, 'invalid_request', /client_secret_hash/);
      expectApiError(await ts.admin('PATCH', path, { scopes: ['a b'] }), 400, 'invalid_request', /scopes/);
      expectApiError(await ts.admin('PATCH', path, { max_delegation_depth: 6 }), 400, 'invalid_request', /max_delegation_depth/);
      expectApiError(await ts.admin('PATCH', path, '[]'), 400, 'invalid_request');
      expectApiError(await ts.admin('PATCH', path, '{', { 'content-type': 'application/json' }), 400, 'invalid_request');
      expectApiError(await ts.admin('PATCH', path, JSON.stringify({ scopes: ['b'] }), { 'content-type': 'text/plain' }), 415, 'unsupported_media_type');
      expect((await ts.admin('GET', path)).body.scopes).toEqual(['a']);
    });

    it('PATCH of an unknown agent is 404', async () => {
      expectApiError(await ts.admin('PATCH', `/admin/agents/${enc(agentId('nobody'))}`, { scopes: ['a'] }), 404, 'not_found');
    });

    it('rotating the secret: the new secret works and the old one is refused', async () => {
      const id = agentId('rotate');
      const reg = await register({ id, audiences: [API] });
      const oldSecret = reg.client_secret!;
      await issue(id, oldSecret); // the old secret works (and is remembered by the verifier)

      const res = await ts.admin('POST', `/admin/agents/${enc(id)}/secret`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.headers.get('cache-control')).toMatch(/no-store/);
      const newSecret = res.body.client_secret as string;
      expect(newSecret).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(newSecret).not.toBe(oldSecret);
      expect(res.body.agent.id).toBe(id);
      expect(allKeys(res.body)).not.toContain('client_secret_hash');

      await issue(id, newSecret);
      const old = await token(id, oldSecret);
      expect(old.status).toBe(401);
      expect(old.body.error).toBe('invalid_client');
      const oldPost = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: id, client_secret: oldSecret });
      expect(oldPost.status).toBe(401);
      expect(oldPost.body.error).toBe('invalid_client');
      expect(JSON.stringify((await ts.admin('GET', `/admin/agents/${enc(id)}`)).body)).not.toContain(newSecret);
    });

    it('rotating the secret of a private_key_jwt agent is 400; of an unknown agent 404', async () => {
      const id = agentId('rotate-pk');
      const keys = await agentKeyPair('EdDSA');
      await register({ id, token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: [keys.jwk] } });
      expectApiError(await ts.admin('POST', `/admin/agents/${enc(id)}/secret`), 400, 'invalid_request', /private_key_jwt/);
      expectApiError(await ts.admin('POST', `/admin/agents/${enc(agentId('nobody'))}/secret`), 404, 'not_found');
    });

    it('DELETE disables the agent, revokes its live tokens and refuses it at /token', async () => {
      const id = agentId('delete-me');
      const reg = await register({ id, scopes: ['s'], audiences: [API, OTHER_API] });
      const secret = reg.client_secret!;
      const issued = [await issue(id, secret), await issue(id, secret, { resource: OTHER_API }), await issue(id, secret, { scope: 's' })];
      for (const t of issued) expect(await introspect(t)).toMatchObject({ active: true, client_id: id });

      const res = await ts.admin('DELETE', `/admin/agents/${enc(id)}`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.agent).toMatchObject({ id, status: 'disabled' });
      expect(res.body.agent.disabled_at).toEqual(expect.any(String));
      expect(res.body.revoked_tokens).toBe(issued.length);
      expect(allKeys(res.body)).not.toContain('client_secret_hash');

      expect((await ts.admin('GET', `/admin/agents/${enc(id)}`)).body.status).toBe('disabled');

      const refused = await token(id, secret);
      expect(refused.status).toBe(401);
      expect(refused.body.error).toBe('invalid_client');

      for (const t of issued) expect(await introspect(t)).toEqual({ active: false });

      const records = await ts.admin('GET', `/admin/tokens?client_id=${enc(id)}`);
      expect(records.body.tokens).toHaveLength(issued.length);
      for (const r of records.body.tokens) {
        expect(r.revoked_at).toEqual(expect.any(String));
        expect(r.revoked_reason).toEqual(expect.any(String));
      }

      expectApiError(await ts.admin('PATCH', `/admin/agents/${enc(id)}`, { scopes: ['t'] }), 400, 'invalid_request', /disabled/);
      expectApiError(await ts.admin('POST', `/admin/agents/${enc(id)}/secret`), 400, 'invalid_request', /disabled/);
      expect((await ts.admin('GET', `/admin/agents/${enc(id)}`)).body.scopes).toEqual(['s']);
    });

    it('DELETE of an already disabled agent keeps the time it was disabled', async () => {
      const id = agentId('delete-twice');
      await register({ id });
      const first = await ts.admin('DELETE', `/admin/agents/${enc(id)}`);
      expect(first.status).toBe(200);
      const disabledAt = first.body.agent.disabled_at as string;
      expect(disabledAt).toEqual(expect.any(String));
      await new Promise((r) => setTimeout(r, 1100));
      const second = await ts.admin('DELETE', `/admin/agents/${enc(id)}`);
      expect(second.status).toBeLessThan(500);
      if (second.status === 200) expect(second.body.agent.disabled_at).toBe(disabledAt);
      expect((await ts.admin('GET', `/admin/agents/${enc(id)}`)).body.disabled_at).toBe(disabledAt);
    });

    it('DELETE of an agent without tokens revokes none; of an unknown agent is 404', async () => {
      const id = agentId('delete-unused');
      await register({ id });
      const res = await ts.admin('DELETE', `/admin/agents/${enc(id)}`);
      expect(res.status).toBe(200);
      expect(res.body.revoked_tokens).toBe(0);
      expectApiError(await ts.admin('DELETE', `/admin/agents/${enc(agentId('nobody'))}`), 404, 'not_found');
    });
  });

  describe('tokens', () => {
    const id = agentId('tokens');
    let secret: string;
    let accessToken: string;
    let jti: string;

    beforeAll(async () => {
      const reg = await register({ id, scopes: ['read', 'write'], audiences: [API, OTHER_API] });
      secret = reg.client_secret!;
      accessToken = await issue(id, secret, { scope: 'read', resource: OTHER_API });
      jti = decodeJwt(accessToken).jti!;
      await issue(id, secret);
    });

    it('lists records of issued tokens with their hash, never the token', async () => {
      const res = await ts.admin('GET', `/admin/tokens?client_id=${enc(id)}`);
      expect(res.status).toBe(200);
      expect(res.body.tokens).toHaveLength(2);
      expect(JSON.stringify(res.body)).not.toContain(accessToken);
      expect(JSON.stringify(res.body)).not.toContain(accessToken.split('.')[2]!);
      const record = res.body.tokens.find((t: { jti: string }) => t.jti === jti);
      expect(record).toBeDefined();
      const claims = decodeJwt(accessToken);
      expect(record).toMatchObject({
        jti,
        type: 'access_token',
        sub: id,
        client_id: id,
        scope: 'read',
        audience: [OTHER_API],
        iat: claims.iat,
        exp: claims.exp,
        revoked_at: null,
      });
      expect(record.kid).toEqual(expect.any(String));
      expect(record.token_hash).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(record.token_hash).toBe(sha256(accessToken));
      expect(typeof record.iat).toBe('number');
      expect(typeof record.exp).toBe('number');
      const keys = (await ts.admin('GET', '/admin/keys')).body.keys.map((k: { kid: string }) => k.kid);
      expect(keys).toContain(record.kid);
      for (const r of res.body.tokens) expect(allKeys(r)).not.toContain('access_token');
    });

    it('filters by jti, sub and type', async () => {
      const byJti = await ts.admin('GET', `/admin/tokens?jti=${enc(jti)}`);
      expect(byJti.status).toBe(200);
      expect(byJti.body.tokens.map((t: { jti: string }) => t.jti)).toEqual([jti]);

      const bySub = await ts.admin('GET', `/admin/tokens?sub=${enc(id)}`);
      expect(bySub.body.tokens).toHaveLength(2);
      expect(bySub.body.tokens.every((t: { sub: string }) => t.sub === id)).toBe(true);

      const byType = await ts.admin('GET', `/admin/tokens?type=access_token&client_id=${enc(id)}`);
      expect(byType.body.tokens).toHaveLength(2);
      const otherType = await ts.admin('GET', `/admin/tokens?type=refresh_token&client_id=${enc(id)}`);
      expect(otherType.body.tokens).toEqual([]);

      const limited = await ts.admin('GET', `/admin/tokens?client_id=${enc(id)}&limit=1`);
      expect(limited.body.tokens).toHaveLength(1);

      expect((await ts.admin('GET', `/admin/tokens?client_id=${enc(agentId('nobody'))}`)).body.tokens).toEqual([]);
      expectApiError(await ts.admin('GET', '/admin/tokens?colour=blue'), 400, 'invalid_request');
      expectApiError(await ts.admin('GET', '/admin/tokens?limit=0'), 400, 'invalid_request');
    });

    it('reads one token record and its lineage; unknown jti is 404', async () => {
      const one = await ts.admin('GET', `/admin/tokens/${enc(jti)}`);
      expect(one.status).toBe(200);
      expect(one.body).toMatchObject({ jti, client_id: id, token_hash: sha256(accessToken) });
      expect(JSON.stringify(one.body)).not.toContain(accessToken);

      const lineage = await ts.admin('GET', `/admin/tokens/${enc(jti)}/lineage`);
      expect(lineage.status).toBe(200);
      expect(lineage.body.token).toMatchObject({ jti });
      expect(lineage.body.ancestors).toEqual([]);
      expect(lineage.body.descendants).toEqual([]);

      expectApiError(await ts.admin('GET', '/admin/tokens/no-such-jti'), 404, 'not_found');
      expectApiError(await ts.admin('GET', '/admin/tokens/no-such-jti/lineage'), 404, 'not_found');
      expectApiError(await ts.admin('POST', '/admin/tokens/no-such-jti/revoke'), 404, 'not_found');
    });

    it('revokes a token: introspection then answers exactly {active:false}', async () => {
      const t = await issue(id, secret, { scope: 'write' });
      const tjti = decodeJwt(t).jti!;
      expect(await introspect(t)).toMatchObject({ active: true, jti: tjti, scope: 'write' });

      const res = await ts.admin('POST', `/admin/tokens/${enc(tjti)}/revoke`);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.revoked).toEqual([tjti]);
      expect(await introspect(t)).toEqual({ active: false });

      const record = await ts.admin('GET', `/admin/tokens/${enc(tjti)}`);
      expect(record.body.revoked_at).toEqual(expect.any(String));
      expect(record.body.revoked_reason).toEqual(expect.any(String));

      // Revoking again revokes nothing new.
      const again = await ts.admin('POST', `/admin/tokens/${enc(tjti)}/revoke`);
      expect(again.status).toBe(200);
      expect(again.body.revoked).toEqual([]);

      // The agent's other tokens stay active.
      expect(await introspect(accessToken)).toMatchObject({ active: true, jti });
    });
  });

  describe('events', () => {
    it('records issued tokens and refusals with reasons, filterable by decision', async () => {
      const id = agentId('events');
      const reg = await register({ id, scopes: ['read'], audiences: [API] });
      const secret = reg.client_secret!;
      const t = await issue(id, secret);
      const jti = decodeJwt(t).jti!;

      const badScope = await token(id, secret, { scope: 'admin' });
      expect(badScope.body.error).toBe('invalid_scope');
      const badTarget = await token(id, secret, { resource: 'https://elsewhere.example' });
      expect(badTarget.body.error).toBe('invalid_target');
      const badClient = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials', client_id: id, client_secret: 'wrong' });
      expect(badClient.status).toBe(401);
      expect(badClient.body.error).toBe('invalid_client');

      const all = await ts.admin('GET', `/admin/events?client_id=${enc(id)}`);
      expect(all.status).toBe(200);
      const events = all.body.events as { id: number; at: string; decision: string; action: string; client_id: string; jti: string | null; reason: string | null }[];
      const issuedEvent = events.find((e) => e.decision === 'issued' && e.jti === jti);
      expect(issuedEvent).toMatchObject({ client_id: id, action: 'token:client_credentials' });
      expect(issuedEvent!.at).toEqual(expect.any(String));
      const reasons = events.filter((e) => e.decision === 'refused').map((e) => e.reason);
      expect(reasons).toEqual(expect.arrayContaining(['invalid_scope', 'invalid_target', 'invalid_client']));
      expect(events.some((e) => e.decision === 'admin' && e.action === 'agent.register')).toBe(true);
      // Newest first.
      const ids = events.map((e) => e.id);
      expect([...ids].sort((a, b) => b - a)).toEqual(ids);

      const refused = await ts.admin('GET', `/admin/events?decision=refused&client_id=${enc(id)}`);
      expect(refused.status).toBe(200);
      expect(refused.body.events.length).toBe(3);
      expect(refused.body.events.every((e: { decision: string; reason: string }) => e.decision === 'refused' && typeof e.reason === 'string')).toBe(true);

      const refusedAll = await ts.admin('GET', '/admin/events?decision=refused');
      expect(refusedAll.body.events.every((e: { decision: string }) => e.decision === 'refused')).toBe(true);
      const issuedAll = await ts.admin('GET', '/admin/events?decision=issued&limit=1000');
      expect(issuedAll.body.events.every((e: { decision: string }) => e.decision === 'issued')).toBe(true);
      expect(issuedAll.body.events.some((e: { jti: string }) => e.jti === jti)).toBe(true);

      // An unauthenticated refusal without a client id is recorded too.
      const anonymous = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' });
      expect(anonymous.status).toBeGreaterThanOrEqual(400);
      const latest = await ts.admin('GET', '/admin/events?decision=refused&limit=1');
      expect(latest.body.events[0]).toMatchObject({ decision: 'refused', reason: anonymous.body.error });
    });

    it('pages events with limit and before', async () => {
      const first = await ts.admin('GET', '/admin/events?limit=2');
      expect(first.status).toBe(200);
      expect(first.body.events).toHaveLength(2);
      expect(first.body.next).toBe(first.body.events[1].id);
      const second = await ts.admin('GET', `/admin/events?limit=2&before=${first.body.next}`);
      expect(second.status).toBe(200);
      expect(second.body.events[0].id).toBeLessThan(first.body.events[1].id);
    });

    for (const q of ['decision=maybe', 'decision=', 'limit=0', 'limit=abc', 'before=abc', 'colour=blue']) {
      it(`refuses ?${q} with 400`, async () => {
        expectApiError(await ts.admin('GET', `/admin/events?${q}`), 400, 'invalid_request');
      });
    }
  });

  describe('keys', () => {
    it('lists the active signing keys and the Biscuit root key without private material', async () => {
      const res = await ts.admin('GET', '/admin/keys');
      expect(res.status).toBe(200);
      const keys = res.body.keys as { kid: string; alg: string; status: string; published: boolean }[];
      const active = keys.filter((k) => k.status === 'active');
      expect(active).toHaveLength(3);
      expect(active.map((k) => k.alg).sort()).toEqual(['Biscuit', 'ES256', 'EdDSA']);
      for (const k of active) {
        expect(k.kid).toEqual(expect.any(String));
        expect(k.published).toBe(true);
      }
      const names = allKeys(res.body);
      expect(names).not.toContain('d');
      expect(names).not.toContain('private_jwk');
      expect(names).not.toContain('privateKey');

      const jwks = await (await fetch(`${ts.url}/jwks`)).json() as { keys: { kid: string }[] };
      for (const k of active) expect(jwks.keys.map((j) => j.kid)).toContain(k.kid);
    });
  });
});
