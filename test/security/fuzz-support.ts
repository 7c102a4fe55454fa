/**
 * Building blocks of the HTTP fuzzer: generated values, mutations of forms, JSON bodies and tokens,
 * JWTs signed at send time, a keep-alive client with bounded concurrency, and the checks every
 * response must pass.
 */
import http from 'node:http';
import { createHash, generateKeyPairSync, randomBytes, sign as cryptoSign, type KeyObject } from 'node:crypto';
import fc from 'fast-check';

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`);
  return n;
}

/** Requests per endpoint group (1,000 in the normal test run, 100,000 in `npm run fuzz`). */
export const FUZZ_RUNS = intEnv('FUZZ_RUNS', 1000);
/** Requests in flight at once. */
export const CONCURRENCY = 8;
/** Base seed; every endpoint group derives its own from it. Set FUZZ_SEED to replay a run. */
export const FUZZ_SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : randomBytes(4).readInt32LE(0);

export const b64u = (s: string | Buffer) => Buffer.from(s).toString('base64url');

/** encodeURIComponent that takes lone surrogates too (as U+FFFD, the way they go over the wire as UTF-8). */
export const enc = (s: string) => encodeURIComponent(Buffer.from(s).toString());

// ---------------------------------------------------------------------------------------------------
// Keys and JWTs signed at send time

export interface FuzzKey {
  alg: 'ES256' | 'EdDSA';
  kid: string;
  privateKey: KeyObject;
  /** The public JWK (with `alg` and `kid`). */
  jwk: Record<string, string>;
  /** The private part, which must never show up in a response. */
  d: string;
}

export function fuzzKey(alg: 'ES256' | 'EdDSA', kid: string): FuzzKey {
  const { privateKey, publicKey } = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const priv = privateKey.export({ format: 'jwk' }) as Record<string, string>;
  const jwk = { ...(publicKey.export({ format: 'jwk' }) as Record<string, string>), alg, kid };
  return { alg, kid, privateKey, jwk, d: priv.d! };
}

/** A compact JWS over any header and claims; `alg` and `kid` default to the key's, but may be overridden (the signature stays the key's). */
export function signJwt(key: FuzzKey, header: unknown, claims: unknown): string {
  const plain = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v) && !(RAW in v);
  const h = plain(header) ? toJson({ alg: key.alg, kid: key.kid, ...header }) : toJson(header);
  const input = `${b64u(h)}.${b64u(toJson(claims))}`;
  const sig = key.alg === 'ES256'
    ? cryptoSign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
    : cryptoSign(null, Buffer.from(input), key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

export const sha256 = (s: string) => createHash('sha256').update(s).digest('base64url');

/** Claim values resolved when the request is sent: `$now`, `$now+N`, `$now-N`, `$fresh` (a new jti). */
function resolveClaims(claims: unknown): unknown {
  if (!claims || typeof claims !== 'object' || Array.isArray(claims) || RAW in claims) return claims;
  const now = Math.floor(Date.now() / 1000);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(claims)) {
    if (v === '$fresh') out[k] = randomBytes(18).toString('base64url');
    else if (typeof v === 'string' && /^\$now([+-]\d+)?$/.test(v)) out[k] = now + Number(v.slice(4) || 0);
    else out[k] = v;
  }
  return out;
}

/** A JWT to sign when the request is sent (so `exp` and `jti` are fresh), then mutated. */
export interface SignSpec {
  /** Which {@link placeholder} it replaces. */
  slot: number;
  key: FuzzKey;
  header: unknown;
  claims: unknown;
  mutation: TokenMutation;
}

/** Stands in a body or header for the signed JWT of a slot. */
export const placeholder = (slot: number) => `ZZSIGNED${slot}ZZ`;

/** Often the token as signed, otherwise mutated. */
export const mostlyKept = (): fc.Arbitrary<TokenMutation> => fc.oneof({ arbitrary: fc.constant({ op: 'keep' as const }), weight: 3 }, { arbitrary: tokenMutation, weight: 2 });

/**
 * Mostly `arb`, one time in ten `wellFormed`. Where every layer of a generator can break a request on its own,
 * few requests come out well-formed by chance; this keeps the successes a group requires from hanging on the seed.
 */
export const sometimesWellFormed = <T>(arb: fc.Arbitrary<T>, wellFormed: fc.Arbitrary<T>): fc.Arbitrary<T> =>
  fc.oneof({ arbitrary: arb, weight: 9 }, { arbitrary: wellFormed, weight: 1 });

// ---------------------------------------------------------------------------------------------------
// Generated values

const RAW = Symbol('raw JSON');
/** JSON text put into a body as it is (deep nesting, numbers JSON.stringify can't write, duplicate keys). */
export interface RawJson { [RAW]: string }
const raw = (text: string): RawJson => ({ [RAW]: text });

/** JSON.stringify that keeps {@link RawJson} nodes as they are. */
export function toJson(v: unknown): string {
  if (v && typeof v === 'object' && RAW in v) return (v as RawJson)[RAW];
  if (Array.isArray(v)) return `[${v.map(toJson).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${toJson(x)}`).join(',')}}`;
  return JSON.stringify(v) ?? 'null';
}

export const SPECIAL_STRINGS = [
  '', ' ', '\u0000', 'a\u0000b', '%00', '%', '%zz', '+', '&', '=', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty',
  'null', 'undefined', 'NaN', 'true', '[]', '{}', '0', '-1', '1e309', '../../../../etc/passwd', '..%2f..%2f', "' OR '1'='1", '"; DROP TABLE agents; --',
  '${7*7}', '{{7*7}}', '<script>alert(1)</script>', '\ud800', '\udfff', 'a\ud83d', '\u202e', '\ufeff', '\u2028', '😀', 'Ǆ', 'İ', 'ß', 'ﬀ',
  'spiffe://agent-sts.test/agents/a', 'spiffe://agent-sts.test/../x', 'spiffe://AGENT-STS.TEST/a', 'wimse://agent-sts.test/a', 'http://127.0.0.1:1/',
  'https://api.fuzz.example', 'urn:x', 'agent-sts.test', '\r\n', '\t', 'Basic', 'Bearer', 'DPoP', 'eyJ', 'eyJ.eyJ.', '...', 'a.b.c', 'a'.repeat(2049),
  'urn:ietf:params:oauth:token-type:access_token', 'urn:ietf:params:oauth:token-type:txn_token', 'urn:ietf:params:oauth:token-type:jwt',
  'urn:ietf:params:oauth:token-type:id_token', 'urn:ietf:params:oauth:grant-type:token-exchange', 'urn:ietf:params:oauth:grant-type:jwt-bearer',
  'client_credentials', 'authorization_code', 'refresh_token', 'password', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
];

const controlChars = fc.string({ unit: fc.integer({ min: 0, max: 31 }).map((c) => String.fromCharCode(c)), minLength: 1, maxLength: 16 });

/** Long strings, from just over the usual limits to over a megabyte. */
export const hugeString: fc.Arbitrary<string> = fc.tuple(
  fc.constantFrom(2049, 16_385, 65_537, 300_000, 1_100_000),
  fc.constantFrom('A', 'é', '😀', '\u0000', '%', 'a b'),
).map(([n, c]) => c.repeat(Math.ceil(n / c.length)));

/** Short strings of every kind: printable, any code point (lone surrogates too), control characters, well-known troublemakers. */
export const fuzzString: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.string({ maxLength: 40 }), weight: 4 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 3 },
  { arbitrary: controlChars, weight: 1 },
  { arbitrary: fc.constantFrom(...SPECIAL_STRINGS), weight: 4 },
  { arbitrary: fc.oneof(fc.integer(), fc.double()).map(String), weight: 1 },
);

/** Strings, now and then a huge one. */
export const fuzzStringOrHuge: fc.Arbitrary<string> = fc.oneof({ arbitrary: fuzzString, weight: 30 }, { arbitrary: hugeString, weight: 1 });

const fuzzNumber: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(2 ** 31, -(2 ** 31) - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 2 ** 64, 1e308, -1e308, -0, 0.1, 5e-324, 1e21),
  fc.constantFrom('1e999', '-1e999', '123456789012345678901234567890', '1.0', '-0', '0e0').map(raw),
);

/**
 * Deeply nested arrays or objects, as raw JSON text: up to 20,000 levels, deeper than a structured clone or a
 * recursive walk of the value can go (about 4,000 on node's default stack).
 */
const deepJson: fc.Arbitrary<unknown> = fc.tuple(fc.integer({ min: 20, max: 20_000 }), fc.boolean()).map(([d, arrays]) => raw(arrays ? `${'['.repeat(d)}${']'.repeat(d)}` : `${'{"a":'.repeat(d)}1${'}'.repeat(d)}`));

const rawOddities: fc.Arbitrary<unknown> = fc.constantFrom(
  '{"__proto__":{"polluted":true}}', '{"constructor":{"prototype":{"polluted":true}}}', '{"a":1,"a":2}', '{"":""}', '[]', '{}', '""', 'null',
).map(raw);

/** Any JSON value: strings, numbers JSON can and can't hold, booleans, null, arrays, objects, deep nesting. */
export const fuzzJson: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    { arbitrary: fuzzString, weight: 5 },
    { arbitrary: fuzzNumber, weight: 3 },
    { arbitrary: fc.boolean(), weight: 1 },
    { arbitrary: fc.constant(null), weight: 1 },
    { arbitrary: fc.array(tie('value'), { maxLength: 5 }), weight: 2 },
    { arbitrary: fc.dictionary(fuzzString, tie('value'), { maxKeys: 5 }), weight: 2 },
    { arbitrary: deepJson, weight: 1 },
    { arbitrary: rawOddities, weight: 1 },
    { arbitrary: hugeString, weight: 1 },
  ),
})).value;

// ---------------------------------------------------------------------------------------------------
// Token mutations

export type TokenMutation =
  | { op: 'keep' }
  | { op: 'flipChar'; at: number; bit: number }
  | { op: 'flipByte'; segment: number; at: number; bit: number }
  | { op: 'truncate'; at: number }
  | { op: 'swapSegments'; a: number; b: number }
  | { op: 'dropSegment'; segment: number }
  | { op: 'extraSegment'; text: string }
  | { op: 'algNone' }
  | { op: 'header'; header: unknown }
  | { op: 'payload'; payload: unknown }
  | { op: 'append'; text: string }
  | { op: 'twice'; sep: string }
  | { op: 'replace'; text: string };

export const tokenMutation: fc.Arbitrary<TokenMutation> = fc.oneof(
  { arbitrary: fc.constant({ op: 'keep' as const }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('flipChar' as const), at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), bit: fc.integer({ min: 0, max: 6 }) }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('flipByte' as const), segment: fc.integer({ min: 0, max: 2 }), at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), bit: fc.integer({ min: 0, max: 7 }) }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('swapSegments' as const), a: fc.integer({ min: 0, max: 2 }), b: fc.integer({ min: 0, max: 2 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('dropSegment' as const), segment: fc.integer({ min: 0, max: 2 }) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('extraSegment' as const), text: fc.string({ maxLength: 20 }) }), weight: 1 },
  { arbitrary: fc.constant({ op: 'algNone' as const }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('header' as const), header: fuzzJson }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('payload' as const), payload: fuzzJson }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('append' as const), text: fuzzString }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('twice' as const), sep: fc.constantFrom(' ', ',', '.', '', '\t') }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant('replace' as const), text: fuzzStringOrHuge }), weight: 1 },
);

function decodeSegment(s: string | undefined): unknown {
  try {
    return JSON.parse(Buffer.from(s ?? '', 'base64url').toString('utf8'));
  } catch {
    return {};
  }
}

export function mutateToken(token: string, m: TokenMutation): string {
  const parts = token.split('.');
  switch (m.op) {
    case 'keep':
      return token;
    case 'flipChar': {
      const i = Math.floor(m.at * token.length);
      return token.slice(0, i) + String.fromCharCode(token.charCodeAt(i) ^ (1 << m.bit)) + token.slice(i + 1);
    }
    case 'flipByte': {
      const bytes = Buffer.from(parts[m.segment] ?? '', 'base64url');
      if (bytes.length) bytes[Math.floor(m.at * bytes.length)]! ^= 1 << m.bit;
      parts[m.segment] = bytes.toString('base64url');
      return parts.join('.');
    }
    case 'truncate':
      return token.slice(0, Math.floor(m.at * token.length));
    case 'swapSegments':
      [parts[m.a], parts[m.b]] = [parts[m.b] ?? '', parts[m.a] ?? ''];
      return parts.join('.');
    case 'dropSegment':
      parts.splice(m.segment, 1);
      return parts.join('.');
    case 'extraSegment':
      return `${token}.${b64u(m.text)}`;
    case 'algNone': {
      const header = decodeSegment(parts[0]);
      // A header nested too deeply for JSON.stringify (a deep JSON mutation before this one) keeps only its alg.
      let text: string;
      try {
        text = JSON.stringify({ ...(header as object), alg: 'none' });
      } catch {
        text = '{"alg":"none"}';
      }
      return `${b64u(text)}.${parts[1] ?? ''}.`;
    }
    case 'header':
      return [b64u(toJson(m.header)), ...parts.slice(1)].join('.');
    case 'payload':
      return [parts[0] ?? '', b64u(toJson(m.payload)), ...parts.slice(2)].join('.');
    case 'append':
      return token + m.text;
    case 'twice':
      return `${token}${m.sep}${token}`;
    case 'replace':
      return m.text;
  }
}

/** A known token, kept or mutated. */
export const mutatedToken = (token: string) => tokenMutation.map((m) => mutateToken(token, m));

// ---------------------------------------------------------------------------------------------------
// Form and JSON mutations

export type Fields = [string, string][];

/** A value for a form field: generated, JSON text, or a mutation of the field's own value (which may be a token). */
export const formValue = (own: string): fc.Arbitrary<string> => fc.oneof(
  { arbitrary: fuzzStringOrHuge, weight: 4 },
  { arbitrary: fuzzJson.map(toJson), weight: 1 },
  { arbitrary: tokenMutation.map((m) => mutateToken(own, m)), weight: 3 },
);

type FieldOp =
  | { op: 'remove'; i: number }
  | { op: 'duplicate'; i: number; value: string | null }
  | { op: 'replace'; i: number; pick: (own: string) => string }
  | { op: 'add'; key: string; value: string }
  | { op: 'rename'; i: number; key: string };

const fieldOp = (knownKeys: readonly string[]): fc.Arbitrary<FieldOp> => fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('remove' as const), i: fc.nat() }), weight: 3 },
  { arbitrary: fc.record({ op: fc.constant('duplicate' as const), i: fc.nat(), value: fc.option(fuzzString) }), weight: 2 },
  // The replacement is chosen from the field's own value when the op is applied.
  { arbitrary: fc.record({ op: fc.constant('replace' as const), i: fc.nat(), pick: fc.tuple(fuzzStringOrHuge, fuzzJson.map(toJson), tokenMutation, fc.integer({ min: 0, max: 7 })).map(([s, j, m, which]) => (own: string) => (which < 3 ? s : which < 4 ? j : mutateToken(own, m))) }), weight: 6 },
  { arbitrary: fc.record({ op: fc.constant('add' as const), key: fc.oneof(fc.constantFrom(...knownKeys), fuzzString), value: fuzzStringOrHuge }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('rename' as const), i: fc.nat(), key: fc.oneof(fc.constantFrom(...knownKeys), fuzzString) }), weight: 1 },
);

function applyFieldOp(fields: Fields, op: FieldOp): Fields {
  const out = fields.map(([k, v]): [string, string] => [k, v]);
  const i = 'i' in op && out.length ? op.i % out.length : -1;
  switch (op.op) {
    case 'remove':
      if (i >= 0) out.splice(i, 1);
      break;
    case 'duplicate':
      if (i >= 0) out.push([out[i]![0], op.value ?? out[i]![1]]);
      break;
    case 'replace':
      if (i >= 0) out[i]![1] = op.pick(out[i]![1]);
      break;
    case 'add':
      out.push([op.key, op.value]);
      break;
    case 'rename':
      if (i >= 0) out[i]![0] = op.key;
      break;
  }
  return out;
}

/** The fields as given, or with up to three removals, duplications, replacements, additions or renames. */
export function mutateFields(base: fc.Arbitrary<Fields>, knownKeys: readonly string[]): fc.Arbitrary<Fields> {
  return fc.tuple(base, fc.array(fieldOp(knownKeys), { maxLength: 3 }), fc.integer({ min: 0, max: 3 }))
    .map(([fields, ops, keep]) => (keep === 0 ? fields : ops.reduce(applyFieldOp, fields)));
}

const MALFORMED_FORM = ['%', '%G1', '%C3%28', '%ED%A0%80', '%FF%FE', '&&', '&=&', '=x', 'a==b', ';', '+', '%2', 'a[b]=c', 'a[]=1&a[]=2', '&grant_type', 'grant_type[]=x', '\u0000', '%00', '&client_id=%00'];

export type FormEncoding = { kind: 'urlencoded' } | { kind: 'malformed'; at: number; text: string } | { kind: 'truncated'; at: number };

export const formEncoding: fc.Arbitrary<FormEncoding> = fc.oneof(
  { arbitrary: fc.constant({ kind: 'urlencoded' as const }), weight: 12 },
  { arbitrary: fc.record({ kind: fc.constant('malformed' as const), at: fc.double({ min: 0, max: 1, noNaN: true }), text: fc.constantFrom(...MALFORMED_FORM) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('truncated' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }), weight: 1 },
);

export function encodeForm(fields: Fields, enc: FormEncoding): string {
  const text = new URLSearchParams(fields).toString();
  if (enc.kind === 'urlencoded') return text;
  const at = Math.floor(enc.at * text.length);
  return enc.kind === 'truncated' ? text.slice(0, at) : text.slice(0, at) + enc.text + text.slice(at);
}

type JsonOp =
  | { op: 'delete'; i: number }
  | { op: 'set'; i: number; value: unknown }
  | { op: 'add'; key: string; value: unknown }
  | { op: 'setNested'; i: number; key: string; value: unknown };

const jsonOp = (knownKeys: readonly string[]): fc.Arbitrary<JsonOp> => fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('delete' as const), i: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('set' as const), i: fc.nat(), value: fuzzJson }), weight: 5 },
  { arbitrary: fc.record({ op: fc.constant('add' as const), key: fc.oneof(fc.constantFrom(...knownKeys), fuzzString), value: fuzzJson }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('setNested' as const), i: fc.nat(), key: fuzzString, value: fuzzJson }), weight: 2 },
);

function applyJsonOp(obj: Record<string, unknown>, op: JsonOp): Record<string, unknown> {
  const out = { ...obj };
  const keys = Object.keys(out);
  const key = 'i' in op && keys.length ? keys[op.i % keys.length]! : undefined;
  switch (op.op) {
    case 'delete':
      if (key !== undefined) delete out[key];
      break;
    case 'set':
      if (key !== undefined) out[key] = op.value;
      break;
    case 'add':
      Object.defineProperty(out, op.key, { value: op.value, enumerable: true, configurable: true, writable: true });
      break;
    case 'setNested': {
      if (key === undefined) break;
      const inner = out[key];
      if (Array.isArray(inner)) out[key] = [...inner, op.value];
      else if (inner && typeof inner === 'object' && !(RAW in inner)) {
        const copy = { ...(inner as Record<string, unknown>) };
        Object.defineProperty(copy, op.key, { value: op.value, enumerable: true, configurable: true, writable: true });
        out[key] = copy;
      } else out[key] = { [op.key]: op.value };
      break;
    }
  }
  return out;
}

/** The object as given (often), changed by up to three ops, or replaced by any JSON value. */
export function mutatedObject(base: Record<string, unknown>, knownKeys: readonly string[]): fc.Arbitrary<unknown> {
  return fc.oneof(
    { arbitrary: fc.constant(base), weight: 4 },
    { arbitrary: fc.array(jsonOp(knownKeys), { minLength: 1, maxLength: 3 }).map((ops) => ops.reduce(applyJsonOp, base)), weight: 3 },
    { arbitrary: fuzzJson, weight: 1 },
  );
}

const MALFORMED_JSON = ['', '{', '}', '{"a":}', '{"a" 1}', '[1,]', '{"a":1,}', "{'a':1}", 'undefined', 'NaN', '\u0000', '{"a":"\\u00"}', '{"a":"\\ud800"}', '\ufeff{}', '{"a":1}{"b":2}', '{"a":01}', '{"a":"\u0001"}'];

export type JsonBodyShape = { kind: 'object' } | { kind: 'value'; value: unknown } | { kind: 'malformed'; text: string } | { kind: 'truncated'; at: number } | { kind: 'garbage'; text: string };

export const jsonBodyShape: fc.Arbitrary<JsonBodyShape> = fc.oneof(
  { arbitrary: fc.constant({ kind: 'object' as const }), weight: 14 },
  { arbitrary: fc.record({ kind: fc.constant('value' as const), value: fuzzJson }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('malformed' as const), text: fc.constantFrom(...MALFORMED_JSON) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('truncated' as const), at: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('garbage' as const), text: fuzzStringOrHuge }), weight: 1 },
);

/** A JSON body: the object (mutated by up to three ops), any other JSON value, malformed or truncated JSON, or text. */
export function jsonBody(base: fc.Arbitrary<Record<string, unknown>>, knownKeys: readonly string[]): fc.Arbitrary<string> {
  return fc.tuple(base, fc.array(jsonOp(knownKeys), { maxLength: 3 }), fc.integer({ min: 0, max: 3 }), jsonBodyShape).map(([obj, ops, keep, shape]) => {
    const text = toJson(keep === 0 ? obj : ops.reduce(applyJsonOp, obj));
    switch (shape.kind) {
      case 'object':
        return text;
      case 'value':
        return toJson(shape.value);
      case 'malformed':
        return shape.text;
      case 'truncated':
        return text.slice(0, Math.floor(shape.at * text.length));
      case 'garbage':
        return shape.text;
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Headers

/** Header values travel as latin-1 without control characters; anything else is replaced (the HTTP client refuses it). */
export const headerSafe = (s: string) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '?').slice(0, 8192);

export const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'application/json; charset=utf-16',
  'application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=iso-8859-1', 'application/x-www-form-urlencoded; charset=bogus',
  'text/plain', 'text/html', 'multipart/form-data; boundary=xyz', 'multipart/form-data', 'application/xml', 'application/jwt',
  'application/*', '*/*', 'application', ';', 'application/json;;;', 'application/merge-patch+json', 'application/vnd.api+json',
];

/** Extra headers now and then: encodings, forwarding, caching, odd accepts. */
export const extraHeaders: fc.Arbitrary<[string, string][]> = fc.oneof(
  { arbitrary: fc.constant([] as [string, string][]), weight: 10 },
  {
    arbitrary: fc.array(fc.tuple(
      fc.constantFrom('content-encoding', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'accept', 'accept-encoding', 'origin', 'if-none-match', 'range', 'x-http-method-override', 'cookie', 'txn-token', 'dpop-nonce'),
      fc.oneof(fuzzString, fc.constantFrom('gzip', 'br', 'deflate', 'identity', 'compress', 'gzip, br', '*', 'bytes=0-1', '127.0.0.1, ::1', 'DELETE'))).map(([k, v]): [string, string] => [k, headerSafe(v)]), { maxLength: 3 }),
    weight: 1,
  },
);

// ---------------------------------------------------------------------------------------------------
// Requests, the client, the checks

export interface FuzzRequest {
  method: string;
  path: string;
  headers: [string, string][];
  body?: string;
  /** Send the body's characters as latin-1 bytes (any byte sequence, invalid UTF-8 included). */
  latin1?: boolean;
  /** JWTs signed when the request is sent, replacing {@link placeholder}s in the body and headers. */
  signed?: SignSpec[];
  /** Which generator made it. */
  label: string;
}

export interface FuzzResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  error?: string;
}

const clip = (s: string, n = 300) => (s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s);

export function describeRequest(r: FuzzRequest): string {
  const headers = r.headers.map(([k, v]) => `${k}: ${clip(v, 200)}`).join('\n  ');
  const signed = r.signed?.map((s) => `${placeholder(s.slot)} = JWT by ${s.key.kid} header ${clip(toJson(s.header), 200)} claims ${clip(toJson(s.claims), 300)} mutation ${clip(toJson(s.mutation), 200)}`).join('\n  ');
  return `[${r.label}] ${r.method} ${clip(r.path, 300)}\n  ${headers}${r.body !== undefined ? `\n  body: ${JSON.stringify(clip(r.body, 600))}` : ''}${signed ? `\n  ${signed}` : ''}`;
}

/** Gives generated requests a one-line printed form in fast-check's report; the failure message holds the whole request. */
export function withDescription(arb: fc.Arbitrary<FuzzRequest>): fc.Arbitrary<FuzzRequest> {
  return arb.map((r) => Object.defineProperty(r, fc.toStringMethod, { value: () => `[${r.label}] ${r.method} ${clip(r.path, 80)}`, enumerable: false }));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

export function closeClient(): void {
  agent.destroy();
}

function fill(text: string, tokens: Map<number, string>): string {
  return tokens.size ? text.replace(/ZZSIGNED(\d+)ZZ/g, (m, n: string) => tokens.get(Number(n)) ?? m) : text;
}

/** Resolves the request's signed JWTs into its body and headers. */
export function build(r: FuzzRequest): FuzzRequest {
  const tokens = new Map((r.signed ?? []).map((s) => [s.slot, mutateToken(signJwt(s.key, s.header, resolveClaims(s.claims)), s.mutation)]));
  return {
    ...r,
    headers: r.headers.map(([k, v]) => [k, headerSafe(fill(v, tokens))]),
    ...(r.body !== undefined ? { body: fill(r.body, tokens) } : {}),
  };
}

/**
 * Sends one request. A kept-alive connection the server closed after its previous response (a body it
 * refused unread) resets the next request on it: that request is sent once more on a new connection, so
 * only a server that really does not answer counts as no response.
 */
export async function send(base: string, req: FuzzRequest, timeoutMs = 30_000): Promise<FuzzResponse> {
  const first = await sendOnce(base, req, timeoutMs, agent);
  if (first.status === 0 && /ECONNRESET|EPIPE|socket hang up/.test(first.error ?? '')) return sendOnce(base, req, timeoutMs, false);
  return first;
}

function sendOnce(base: string, req: FuzzRequest, timeoutMs: number, via: http.Agent | false): Promise<FuzzResponse> {
  const url = new URL(base);
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of req.headers) {
    const prev = headers[k];
    headers[k] = prev === undefined ? v : [...(Array.isArray(prev) ? prev : [prev]), v];
  }
  const body = req.body === undefined ? undefined : Buffer.from(req.body, req.latin1 ? 'latin1' : 'utf8');
  if (body) headers['content-length'] = String(body.length);
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: FuzzResponse) => {
      if (!done) {
        done = true;
        resolve(r);
      }
    };
    // Node 24's HTTP parser answers an oversized header block with a 431 and then resets the connection the
    // client is still writing to: a response whose status line arrived counts as that response.
    let answered: { res: http.IncomingMessage; chunks: Buffer[] } | undefined;
    const failed = (error: string) =>
      finish(answered?.res.statusCode === 431 ? { status: 431, headers: answered.res.headers, body: Buffer.concat(answered.chunks).toString('utf8') } : { status: 0, headers: {}, body: '', error });
    let request: http.ClientRequest;
    try {
      request = http.request({ host: url.hostname, port: url.port, method: req.method, path: req.path, headers, agent: via, timeout: timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        answered = { res, chunks };
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => finish({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => failed(`response: ${err.message}`));
      });
    } catch (err) {
      finish({ status: 0, headers: {}, body: '', error: `client refused the request: ${(err as Error).message}` });
      return;
    }
    request.on('timeout', () => request.destroy(new Error(`no response within ${timeoutMs} ms`)));
    request.on('error', (err) => failed(err.message));
    request.end(body);
  });
}

const TRACE_PATTERNS: RegExp[] = [
  /\n\s+at /, /\bat (?:async )?[\w$.<>[\]]+ \(/, /\bat (?:file:|node:|\/)[^\s]*:\d+:\d+/, /\/src\//, /node_modules/, /file:\/\//, /\.[cm]?[jt]s:\d+:\d+/,
  /\b(?:TypeError|ReferenceError|RangeError|SyntaxError): /, /\bknex\b|\bpglite\b|\bpg_[a-z]+\(|relation "|violates (?:not-null|unique|foreign key|check) constraint|invalid byte sequence|unsupported Unicode escape/i,
];

/** What a response must never hold: stack frames, source paths, database error text, secrets, private key material. */
export function leaks(req: FuzzRequest, res: FuzzResponse, secrets: Iterable<string>): string[] {
  const problems: string[] = [];
  const sent = `${req.path}\n${req.headers.map(([k, v]) => `${k}: ${v}`).join('\n')}\n${req.body ?? ''}`;
  const received = `${Object.entries(res.headers).map(([k, v]) => `${k}: ${String(v)}`).join('\n')}\n${res.body}`;
  for (const p of TRACE_PATTERNS) {
    const m = p.exec(received);
    // A value the request itself sent and the response quotes back is not a leak.
    if (m && !sent.includes(m[0])) problems.push(`internal detail in the response (${p}): ${JSON.stringify(received.slice(Math.max(0, m.index - 80), m.index + 120))}`);
  }
  for (const s of secrets) if (s && received.includes(s)) problems.push(`a secret in the response: ${s.slice(0, 6)}…`);
  if (/"d"\s*:/.test(received) && !sent.includes('"d"')) problems.push('private key material ("d") in the response');
  if (/PRIVATE KEY/.test(received)) problems.push('a PEM private key in the response');
  return problems;
}

/** The checks for every response: no 5xx (nor no answer), an error body `{"error": string, ...}`, nothing leaked. */
export function commonProblems(req: FuzzRequest, res: FuzzResponse, secrets: Iterable<string>, opts: { oauth?: boolean } = {}): string[] {
  if (res.error || res.status === 0) return [`no response: ${res.error ?? 'status 0'}`];
  const problems: string[] = [];
  if (res.status >= 500) problems.push(`status ${res.status}`);
  // Node's HTTP parser answers oversized headers itself (431, empty body) before the application sees the request.
  const fromParser = res.status === 431 && res.body === '';
  if (res.status >= 400 && req.method !== 'HEAD' && !fromParser) {
    let body: unknown;
    try {
      body = JSON.parse(res.body);
    } catch {
      problems.push('the error body is not JSON');
    }
    if (body !== undefined && (typeof body !== 'object' || body === null || typeof (body as { error?: unknown }).error !== 'string')) problems.push('the error body has no "error" string');
    if (!/json/.test(String(res.headers['content-type']))) problems.push(`error content-type ${res.headers['content-type']}`);
    if (opts.oauth && !/no-store/.test(String(res.headers['cache-control']))) problems.push('an OAuth error without Cache-Control: no-store');
  }
  problems.push(...leaks(req, res, secrets));
  return problems;
}

export interface TargetResult {
  sent: number;
  statuses: Map<number, number>;
}

/**
 * Sends `runs` generated requests (in batches of {@link CONCURRENCY}, concurrently, over keep-alive) and
 * checks each response. fast-check drives generation with a seed derived from {@link FUZZ_SEED}; a failure
 * names the seed, the request (after its JWTs were signed) and the response.
 */
export async function fuzzTarget(
  name: string,
  arb: fc.Arbitrary<FuzzRequest>,
  opts: { base: string; runs?: number; check: (req: FuzzRequest, res: FuzzResponse) => string[]; after?: (req: FuzzRequest, res: FuzzResponse) => void },
): Promise<TargetResult> {
  const runs = opts.runs ?? FUZZ_RUNS;
  const seed = (FUZZ_SEED ^ Number.parseInt(createHash('sha256').update(name).digest('hex').slice(0, 8), 16)) | 0;
  const result: TargetResult = { sent: 0, statuses: new Map() };
  await fc.assert(
    fc.asyncProperty(fc.array(withDescription(arb), { minLength: CONCURRENCY, maxLength: CONCURRENCY }), async (batch) => {
      const built = batch.map(build);
      const responses = await Promise.all(built.map((r) => send(opts.base, r)));
      for (const [i, res] of responses.entries()) {
        const req = built[i]!;
        result.sent += 1;
        result.statuses.set(res.status, (result.statuses.get(res.status) ?? 0) + 1);
        const problems = opts.check(req, res);
        if (problems.length) {
          throw new Error(`${name}: ${problems.join('; ')}\nrequest: ${describeRequest(req)}\nresponse: ${res.status} ${clip(JSON.stringify(res.headers), 400)}\n  ${clip(res.body, 1000)}\nreplay with FUZZ_SEED=${FUZZ_SEED}`);
        }
        opts.after?.(req, res);
      }
    }),
    // Shrinking re-sends whole batches against a server whose state moved on; the first failure is reported as it is.
    { seed, numRuns: Math.ceil(runs / CONCURRENCY), endOnFailure: true },
  );
  return result;
}

export const statusSummary = (r: TargetResult) => [...r.statuses.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(' ');

/**
 * One endpoint group against a started server: sends the requests, prints the group's line, adds the server's
 * own logged errors to a failure, and (with enough runs) requires that some requests succeeded, proof that
 * generation reaches past the first checks.
 */
export async function fuzzGroup(
  server: { url: string; logs: string[] },
  name: string,
  arb: fc.Arbitrary<FuzzRequest>,
  opts: { runs?: number; check: (req: FuzzRequest, res: FuzzResponse) => string[]; after?: (req: FuzzRequest, res: FuzzResponse) => void; expectSuccess?: boolean },
): Promise<TargetResult> {
  const started = Date.now();
  let r: TargetResult;
  try {
    r = await fuzzTarget(name, arb, { base: server.url, runs: opts.runs, check: opts.check, after: opts.after });
  } catch (err) {
    const logged = server.logs.filter((l) => /"level":(50|60)/.test(l)).slice(-3).map((l) => l.slice(0, 1500));
    if (logged.length) (err as Error).message += `\nserver errors logged:\n${logged.join('\n')}`;
    throw err;
  }
  console.log(`fuzz ${name}: ${r.sent} requests in ${Date.now() - started} ms: ${statusSummary(r)}`);
  if (opts.expectSuccess !== false && FUZZ_RUNS >= 200 && ![...r.statuses.keys()].some((s) => s >= 200 && s < 300)) throw new Error(`${name}: no request succeeded`);
  return r;
}
