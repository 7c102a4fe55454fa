import { randomId } from './random-id.js';
import { decodeProtectedHeader, importJWK, jwtVerify, SignJWT, type CryptoKey, type JWK, type KeyObject } from 'jose';
import { tokenHash } from './token-hash.js';
import { asVerificationError, TokenVerificationError } from './token-errors.js';

export const WPT_TYP = 'wpt+jwt';
/** The furthest in the future a WPT may expire. */
export const WPT_MAX_LIFETIME = 300;
/** Seconds a WPT is still accepted past its `exp` (clock skew between agent and verifier). */
export const WPT_CLOCK_TOLERANCE = 5;

export interface WptClaims {
  aud: string;
  exp: number;
  jti: string;
  wth: string;
  ath?: string;
  tth?: string;
  iat?: number;
}

/** Creates a Workload Proof Token (draft-ietf-wimse-wpt) for a request, signed with the agent's key. */
export async function createWpt(opts: {
  wit: string; key: CryptoKey | KeyObject; alg: string; audience: string; lifetime?: number; now?: number; accessToken?: string; txnToken?: string;
}): Promise<string> {
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const claims: WptClaims = {
    aud: opts.audience,
    exp: now + (opts.lifetime ?? 60),
    jti: randomId(18),
    wth: tokenHash(opts.wit),
    ...(opts.accessToken ? { ath: tokenHash(opts.accessToken) } : {}),
    ...(opts.txnToken ? { tth: tokenHash(opts.txnToken) } : {}),
  };
  return new SignJWT({ ...claims }).setProtectedHeader({ typ: WPT_TYP, alg: opts.alg }).setIssuedAt(now).sign(opts.key);
}

/**
 * Verifies a WPT against the WIT it accompanies: signed by the WIT's `cnf.jwk` with its `alg`,
 * `typ: wpt+jwt`, `aud` exactly the target URI (a string, or an array of that one string), expiring
 * within {@link WPT_MAX_LIFETIME} seconds, a `jti` of at least 128 bits, `wth` the WIT's hash, `ath`/`tth`
 * present exactly when those tokens ride along, `oth` absent or empty.
 * Replay is the caller's to check with the returned `jti`, through `exp` plus the clock tolerance.
 */
export async function verifyWpt(token: string, opts: {
  wit: string; witJwk: JWK; audience: string; now: number; accessToken?: string; txnToken?: string; clockTolerance?: number;
}): Promise<WptClaims> {
  const alg = opts.witJwk.alg!;
  let header;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw new TokenVerificationError('the WPT is malformed');
  }
  if (header.alg !== alg) throw new TokenVerificationError(`the WPT alg must be the WIT key's alg (${alg})`);
  let payload: Record<string, unknown>;
  try {
    const key = await importJWK(opts.witJwk, alg);
    ({ payload } = await jwtVerify(token, key, {
      typ: WPT_TYP,
      algorithms: [alg],
      requiredClaims: ['aud', 'exp', 'jti', 'wth'],
      currentDate: new Date(opts.now * 1000),
      clockTolerance: opts.clockTolerance ?? WPT_CLOCK_TOLERANCE,
    }));
  } catch (err) {
    throw asVerificationError(err, 'WPT');
  }
  const claims = payload as unknown as WptClaims & { oth?: unknown };
  // One proof serves the one request it was made for: `aud` is exactly the target URI, as a string or as the
  // only member of an array (RFC 7519 §4.1.3: the string is the one-audience case of the array).
  const aud: unknown = payload.aud;
  if ((Array.isArray(aud) && aud.length === 1 ? aud[0] : aud) !== opts.audience) {
    throw new TokenVerificationError(`the WPT aud must be exactly the target URI ${opts.audience}`);
  }
  claims.aud = opts.audience;
  if (claims.exp > opts.now + WPT_MAX_LIFETIME) throw new TokenVerificationError(`the WPT must expire within ${WPT_MAX_LIFETIME} seconds`);
  if (typeof claims.jti !== 'string' || claims.jti.length < 22) throw new TokenVerificationError('the WPT jti must carry at least 128 bits');
  if (claims.wth !== tokenHash(opts.wit)) throw new TokenVerificationError('the WPT wth does not match the WIT');
  for (const [claim, tok] of [['ath', opts.accessToken], ['tth', opts.txnToken]] as const) {
    if (tok === undefined && claims[claim] !== undefined) throw new TokenVerificationError(`the WPT has ${claim} but no such token accompanies it`);
    if (tok !== undefined && claims[claim] !== tokenHash(tok)) throw new TokenVerificationError(`the WPT ${claim} does not match the token it accompanies`);
  }
  // draft-ietf-wimse-wpt: a WPT whose oth has entries the recipient does not understand MUST be rejected. No other
  // token here conveys identity or authorization context, so every entry is one; an empty object names none.
  if (claims.oth !== undefined) {
    if (claims.oth === null || typeof claims.oth !== 'object' || Array.isArray(claims.oth)) throw new TokenVerificationError('the WPT oth claim must be a JSON object');
    if (Object.keys(claims.oth).length) throw new TokenVerificationError('the WPT oth claim names tokens this server does not understand');
  }
  return claims;
}
