import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, createRemoteJWKSet, EmbeddedJWK, jwtVerify, type JWK } from 'jose';
import { tokenHash } from '../../src/tokens/token-hash.js';

/**
 * A minimal resource server for tests: accepts `Authorization: DPoP <access token>` with a DPoP proof
 * (RFC 9449) from the key the token is bound to, verifying the token from the issuer's JWKS.
 */
export class ProtectedResource {
  private server!: Server;
  url = '';

  constructor(private readonly issuer: string, readonly audience: string) {}

  async start(): Promise<this> {
    const jwks = createRemoteJWKSet(new URL(`${this.issuer}/jwks`));
    const seen = new Set<string>();
    this.server = createServer((req, res) => {
      const deny = (why: string) => {
        res.statusCode = 401;
        res.setHeader('www-authenticate', `DPoP error="invalid_token", error_description="${why}"`);
        res.end(JSON.stringify({ error: 'invalid_token', why }));
      };
      (async () => {
        const [scheme, token] = (req.headers.authorization ?? '').split(' ');
        const proof = req.headers.dpop;
        if (scheme !== 'DPoP' || !token || typeof proof !== 'string') return deny('DPoP token and proof required');
        const { payload } = await jwtVerify(token, jwks, { issuer: this.issuer, audience: this.audience, typ: 'at+jwt' });
        const jkt = (payload.cnf as { jkt?: string } | undefined)?.jkt;
        if (!jkt) return deny('token is not key-bound');
        const { payload: p, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['EdDSA', 'Ed25519', 'ES256'], maxTokenAge: 60 });
        if (await calculateJwkThumbprint(protectedHeader.jwk as JWK) !== jkt) return deny('proof key is not the token key');
        if (p.htm !== req.method) return deny('htm');
        if (p.htu !== `${this.url}${req.url?.split('?')[0]}`) return deny('htu');
        if (p.ath !== tokenHash(token)) return deny('ath');
        if (seen.has(p.jti as string)) return deny('proof replayed');
        seen.add(p.jti as string);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ sub: payload.sub, scope: payload.scope }));
      })().catch((err: Error) => deny(err.message.replace(/"/g, "'")));
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  close() {
    return new Promise<void>((r) => this.server.close(() => r()));
  }
}
