import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { agentId, POSTGRES_URL, startTestServer, type TestServer } from '../support/test-server.js';
import { basic, postForm } from '../support/oauth-client.js';

const API = 'https://api.example.com';
const TTL = 3;

describe('signing key rotation', () => {
  let ts: TestServer;
  let secret: string;
  const id = agentId('rotating');

  const token = async () => {
    const res = await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, secret) });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.access_token as string;
  };
  const kids = async () => ((await (await fetch(`${ts.url}/jwks`)).json()) as { keys: { kid: string; d?: string }[] }).keys.map((k) => k.kid);

  beforeAll(async () => {
    ts = await startTestServer({ ACCESS_TOKEN_TTL: String(TTL) });
    secret = (await ts.admin('POST', '/admin/agents', { id, audiences: [API] })).body.client_secret;
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('publishes public keys only', async () => {
    const body = await (await fetch(`${ts.url}/jwks`)).json() as { keys: Record<string, unknown>[] };
    // EdDSA and ES256 signing keys, and the Biscuit root key (Ed25519, kid biscuit-<root key id>).
    expect(body.keys).toHaveLength(3);
    expect(body.keys.filter((k) => String(k.kid).startsWith('biscuit-'))).toHaveLength(1);
    for (const k of body.keys) {
      expect(k).not.toHaveProperty('d');
      expect(k.use).toBe('sig');
    }
    expect(body.keys.map((k) => k.alg).sort()).toEqual(['ES256', 'EdDSA', 'EdDSA']);
  });

  it('switches signing without a restart, keeps the old key until its last token expires', async () => {
    const jwks = createRemoteJWKSet(new URL(`${ts.url}/jwks`), { cooldownDuration: 0 });
    const before = await token();
    const oldKid = decodeProtectedHeader(before).kid!;
    await jwtVerify(before, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });

    const rotated = await ts.admin('POST', '/admin/keys/rotate');
    expect(rotated.status).toBe(200);
    expect(rotated.body.created).toHaveLength(3);
    const newKid = rotated.body.created.find((k: string) => rotated.body.keys.find((x: { kid: string; alg: string }) => x.kid === k && x.alg === 'EdDSA'));
    expect(await kids()).toEqual(expect.arrayContaining([oldKid, newKid]));

    const after = await token();
    expect(decodeProtectedHeader(after).kid).toBe(newKid);
    await jwtVerify(after, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });
    await jwtVerify(before, jwks, { issuer: ts.issuer, audience: API, typ: 'at+jwt' });

    const listed = await ts.admin('GET', '/admin/keys');
    expect(listed.body.keys.find((k: { kid: string }) => k.kid === oldKid)).toMatchObject({ status: 'retired', published: true });

    await new Promise((r) => setTimeout(r, (TTL + 1) * 1000));
    const published = await kids();
    expect(published).not.toContain(oldKid);
    expect(published).toContain(newKid);
    // The unused retired ES256 and Biscuit root keys had no live tokens: gone too.
    expect(published).toHaveLength(3);
  });

  it('never signs with a key that is not yet published, even under concurrent rotation', async () => {
    const issued = await Promise.all([
      ...Array.from({ length: 12 }, () => token()),
      ts.admin('POST', '/admin/keys/rotate').then(() => null),
      ...Array.from({ length: 12 }, () => token()),
    ]);
    const published = new Set(await kids());
    for (const tok of issued) {
      if (tok) expect(published.has(decodeProtectedHeader(tok).kid!)).toBe(true);
    }
  });
  it('answers every concurrent lookup of a key it has not read yet, not only the one that reads it', async () => {
    const keys = ts.server.keys;
    const { kid } = (await keys.jwks()).keys[0]!;
    // Forget what was read, and make the next read slow, so the lookups below overlap it.
    const internals = keys as unknown as { published: Map<string, unknown>; publishedAt: number; jwks: () => Promise<unknown> };
    internals.published = new Map();
    internals.publishedAt = 0;
    const read = keys.jwks.bind(keys);
    internals.jwks = async () => {
      await new Promise((r) => setTimeout(r, 50));
      return read();
    };
    try {
      const found = await Promise.all(Array.from({ length: 5 }, () => keys.publicKey(kid)));
      expect(found.map((k) => k?.kid)).toEqual(Array(5).fill(kid));
    } finally {
      delete (internals as { jwks?: unknown }).jwks;
    }
  });
});

describe.runIf(!!POSTGRES_URL)('rotation across servers sharing one PostgreSQL database', () => {
  it('a rotation on one server is picked up by the other without a restart', async () => {
    const a = await startTestServer({}, undefined, { keyRefreshMs: 200 });
    const b = await startTestServer({}, a.db, { keyRefreshMs: 200 });
    try {
      const id = agentId('shared');
      const secret = (await a.admin('POST', '/admin/agents', { id, audiences: [API] })).body.client_secret as string;
      const tokenFrom = async (s: TestServer) => (await postForm(`${s.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, secret) })).body.access_token as string;
      const oldKid = decodeProtectedHeader(await tokenFrom(b)).kid;
      const rotated = await a.admin('POST', '/admin/keys/rotate');
      const newKids: string[] = rotated.body.created;
      await new Promise((r) => setTimeout(r, 800));
      const kid = decodeProtectedHeader(await tokenFrom(b)).kid;
      expect(kid).not.toBe(oldKid);
      expect(newKids).toContain(kid);
      const jwksFromB = (await (await fetch(`${b.url}/jwks`)).json()) as { keys: { kid: string }[] };
      expect(jwksFromB.keys.map((k) => k.kid)).toEqual(expect.arrayContaining([oldKid, kid]));
    } finally {
      await b.stop();
      await a.close();
    }
  });
});

describe('rotation with KEY_ACTIVATION_DELAY', () => {
  it('publishes the next keys at once and signs with them only after the delay', async () => {
    const ts = await startTestServer({ KEY_ACTIVATION_DELAY: '2' });
    try {
      const id = agentId('delayed');
      const secret = (await ts.admin('POST', '/admin/agents', { id, audiences: [API] })).body.client_secret as string;
      const token = async () => (await postForm(`${ts.url}/token`, { grant_type: 'client_credentials' }, { authorization: basic(id, secret) })).body.access_token as string;
      const oldKid = decodeProtectedHeader(await token()).kid;

      const rotated = await ts.admin('POST', '/admin/keys/rotate');
      const created: string[] = rotated.body.created;
      expect(rotated.body.activates_at).toBeGreaterThan(Math.floor(Date.now() / 1000));
      expect(rotated.body.keys.filter((k: { status: string }) => k.status === 'next').map((k: { kid: string }) => k.kid).sort()).toEqual([...created].sort());
      const published = ((await (await fetch(`${ts.url}/jwks`)).json()) as { keys: { kid: string }[] }).keys.map((k) => k.kid);
      expect(published).toEqual(expect.arrayContaining([oldKid, ...created]));
      expect(decodeProtectedHeader(await token()).kid).toBe(oldKid);

      await new Promise((r) => setTimeout(r, 3200));
      const kid = decodeProtectedHeader(await token()).kid;
      expect(created).toContain(kid);
      const listed = (await ts.admin('GET', '/admin/keys')).body.keys as { kid: string; status: string }[];
      expect(listed.find((k) => k.kid === oldKid)?.status).toBe('retired');
      expect(listed.find((k) => k.kid === kid)?.status).toBe('active');
    } finally {
      await ts.close();
    }
  });
});
