import { describe, expect, it } from 'vitest';
import { CREDENTIAL_CHANGE, SESSION_REVOKED, SecuritySignals, TOKEN_CLAIMS_CHANGE, type SecurityEvent } from '../../src/verifier/security-signals.js';

const ISSUER = 'https://sts.example';
const AGENT = 'spiffe://agent-sts.test/agents/a';
const NOW = 1_800_000_000;

const event = (type: string, subject: SecurityEvent['subject'], members: Record<string, unknown> = {}): SecurityEvent => ({ jti: 'e1', iat: NOW, type, subject, event: { event_timestamp: NOW, ...members } });
const wit = (iat: number) => ({ type: 'wit' as const, iat, parties: [AGENT], scopes: [] });

describe('security signals: what an event refuses', () => {
  it('a credential revocation or update refuses the agent\'s WITs issued up to it, not later ones', () => {
    for (const change of ['revoke', 'update', 'delete']) {
      const s = new SecuritySignals(ISSUER, 3600);
      s.apply(event(CREDENTIAL_CHANGE, { format: 'uri', uri: AGENT }, { credential_type: 'app', change_type: change }), NOW);
      expect(s.refusal(wit(NOW - 100))).toMatch(/credentials have changed/);
      expect(s.refusal(wit(NOW))).toMatch(/credentials have changed/);
      expect(s.refusal(wit(NOW + 1))).toBeUndefined();
      expect(s.refusal({ type: 'access_token', iat: NOW - 100, parties: [AGENT], scopes: [] })).toBeUndefined();
    }
  });

  it('a new credential refuses nothing', () => {
    const s = new SecuritySignals(ISSUER, 3600);
    s.apply(event(CREDENTIAL_CHANGE, { format: 'uri', uri: AGENT }, { change_type: 'create' }), NOW);
    expect(s.refusal(wit(NOW - 100))).toBeUndefined();
  });

  it('a jwt_id of another issuer revokes nothing', () => {
    const s = new SecuritySignals(ISSUER, 3600);
    const effect = s.apply(event(SESSION_REVOKED, { format: 'jwt_id', iss: 'https://evil.example', jti: 't1' }), NOW);
    expect(effect.jtis).toEqual([]);
    expect(s.refusal({ type: 'access_token', jti: 't1', iat: NOW, parties: [AGENT], scopes: [] })).toBeUndefined();
  });

  it('forgets events after the retention time', () => {
    const s = new SecuritySignals(ISSUER, 60);
    s.apply(event(SESSION_REVOKED, { format: 'jwt_id', iss: ISSUER, jti: 't1' }), NOW);
    s.apply(event(TOKEN_CLAIMS_CHANGE, { format: 'uri', uri: AGENT }, { claims: { scope: 'a' } }), NOW);
    const token = { type: 'access_token' as const, jti: 't1', iat: NOW - 1, parties: [AGENT], clientId: AGENT, scopes: ['b'] };
    expect(s.refusal(token)).toMatch(/revoked/);
    s.apply(event('urn:example:other', { format: 'opaque', id: 'x' }), NOW + 30);
    expect(s.refusal(token)).toMatch(/revoked/);
    expect(s.refusal({ ...token, jti: 't2' })).toMatch(/scopes/);
    s.apply(event('urn:example:other', { format: 'opaque', id: 'x' }), NOW + 61);
    expect(s.refusal(token)).toBeUndefined();
  });
});
