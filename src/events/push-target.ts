import { promises as dns, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';

/**
 * Where a push endpoint may point: its host is resolved and every address it resolves to must be public,
 * unless the operator allowed it (`SSF_PUSH_ALLOW_ADDRESSES`). Checked when a stream is created or changed
 * and again before every delivery, which then connects to the address just checked (no second lookup, so a
 * name that resolves elsewhere a moment later cannot redirect the request: DNS rebinding).
 */

/** Addresses that are not a public receiver's: loopback, private, link-local, shared, reserved, documentation, multicast. */
const BLOCKED_V4: [string, number][] = [
  ['0.0.0.0', 8], // "this network", 0.0.0.0 included
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // shared address space (CGNAT)
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata services
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // TEST-NET-1
  ['192.88.99.0', 24], // 6to4 relay anycast
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // TEST-NET-2
  ['203.0.113.0', 24], // TEST-NET-3
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, and the broadcast address
];
const BLOCKED_V6: [string, number][] = [
  ['::', 96], // unspecified, loopback and the deprecated IPv4-compatible addresses
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard-only
  ['2001::', 32], // Teredo
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated)
  ['ff00::', 8], // multicast
];

const blocked = new BlockList();
for (const [net, prefix] of BLOCKED_V4) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of BLOCKED_V6) blocked.addSubnet(net, prefix, 'ipv6');

type Family = 'ipv4' | 'ipv6';

/** An address in the canonical form of URL hosts (IPv6 compressed, lower-case), or undefined when it is none. */
function canonical(ip: string): { address: string; family: Family } | undefined {
  const v = isIP(ip);
  if (v === 4) return { address: ip, family: 'ipv4' };
  if (v !== 6) return undefined;
  const host = URL.parse(`http://[${ip}]/`)?.hostname;
  return host ? { address: host.slice(1, -1), family: 'ipv6' } : undefined;
}

/** The eight 16-bit groups of a canonical IPv6 address. */
function groups(v6: string): number[] {
  const [head, tail] = v6.includes('::') ? v6.split('::') as [string, string] : [v6, undefined];
  const h = head ? head.split(':').map((g) => parseInt(g, 16)) : [];
  const t = tail ? tail.split(':').map((g) => parseInt(g, 16)) : [];
  return tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
}

const v4Of = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;

/** The IPv4 address an IPv6 address stands for: IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) or 6to4 (2002::/16). */
function embeddedV4(v6: string): string | undefined {
  const g = groups(v6);
  if (g.length !== 8) return undefined;
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return v4Of(g[6]!, g[7]!);
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return v4Of(g[6]!, g[7]!);
  if (g[0] === 0x2002) return v4Of(g[1]!, g[2]!);
  return undefined;
}

/** The operator's exceptions: addresses and CIDR ranges (`SSF_PUSH_ALLOW_ADDRESSES`). */
export function allowList(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const e of entries) {
    const [ip, prefix] = e.split('/') as [string, string | undefined];
    const c = canonical(ip);
    if (!c) throw new Error(`not an IP address or CIDR range: ${e}`);
    if (prefix === undefined) list.addAddress(c.address, c.family);
    else list.addSubnet(c.address, Number(prefix), c.family);
  }
  return list;
}

/** Parses one allow-list entry (for the configuration): an IP address or CIDR range, or a reason it is not. */
export function allowListEntryProblem(entry: string): string | undefined {
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(entry);
  const c = m ? canonical(m[1]!) : undefined;
  if (!m || !c) return `${JSON.stringify(entry)} is not an IP address or CIDR range`;
  if (m[2] !== undefined && Number(m[2]) > (c.family === 'ipv4' ? 32 : 128)) return `${JSON.stringify(entry)}: the prefix length is too long`;
  return undefined;
}

/** Whether a push may be sent to this address: public, or allowed by the operator. */
export function addressAllowed(ip: string, allow: BlockList): boolean {
  const c = canonical(ip);
  if (!c) return false;
  if (allow.check(c.address, c.family)) return true;
  if (c.family === 'ipv6') {
    const v4 = embeddedV4(c.address);
    if (v4 !== undefined) return allow.check(v4, 'ipv4') || !blocked.check(v4, 'ipv4');
  }
  return !blocked.check(c.address, c.family);
}

export type Lookup = (host: string) => Promise<LookupAddress[]>;

/**
 * getaddrinfo runs on libuv's small thread pool (shared with file and crypto work) and cannot be cancelled: at
 * most this many push-endpoint lookups run at once, so slow names a client picks cannot take every thread.
 */
const MAX_LOOKUPS = 2;
/** Lookups waiting for a turn, at most; a lookup waiting longer than the longest push timeout is given up. */
const MAX_WAITING = 100;
const MAX_WAIT_MS = 60_000;
let lookupsRunning = 0;
const lookupQueue: (() => void)[] = [];

/** Takes a turn to look up; a turn ending is handed to the next waiting lookup, if any. */
async function turn(): Promise<void> {
  if (lookupsRunning < MAX_LOOKUPS) {
    lookupsRunning++;
    return;
  }
  if (lookupQueue.length >= MAX_WAITING) throw Object.assign(new Error('too many lookups waiting'), { code: 'EBUSY' });
  const since = Date.now();
  await new Promise<void>((resolve) => lookupQueue.push(resolve));
  if (Date.now() - since > MAX_WAIT_MS) {
    endTurn();
    throw Object.assign(new Error('waited too long for a lookup'), { code: 'ETIMEOUT' });
  }
}

function endTurn(): void {
  const next = lookupQueue.shift();
  if (next) next();
  else lookupsRunning--;
}

/** The system resolver (getaddrinfo: the hosts file, then DNS), every address; at most `MAX_LOOKUPS` at once. */
export const systemLookup: Lookup = async (host) => {
  await turn();
  try {
    return await dns.lookup(host, { all: true, verbatim: true });
  } finally {
    endTurn();
  }
};

/** A push endpoint checked: the address to connect to. */
export interface PushTarget {
  url: URL;
  address: string;
  family: 4 | 6;
}

/** Why a push endpoint's host may not be used (said to the receiver without the addresses it resolved to). */
export const INTERNAL_HOST = 'endpoint_url: the host must resolve to public addresses only (loopback, private, link-local and other internal addresses are refused unless the server allows them)';

/**
 * Resolves a push endpoint's host (bounded by `timeoutMs`) and checks every address it resolves to; the
 * first is the one to connect to. An IP literal is checked as it is; a `.invalid` name (RFC 6761) is
 * refused without a lookup.
 */
export async function resolvePushTarget(url: URL, allow: BlockList, lookup: Lookup, timeoutMs: number): Promise<PushTarget | { refused: string; detail: string }> {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  let addresses: LookupAddress[];
  if (isIP(host)) {
    addresses = [{ address: host, family: isIP(host) }];
  } else if (/(^|\.)invalid\.?$/i.test(host)) {
    return { refused: INTERNAL_HOST, detail: 'a .invalid name does not resolve' };
  } else {
    let timer: NodeJS.Timeout | undefined;
    try {
      addresses = await Promise.race([
        lookup(host),
        new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error('timed out')), timeoutMs); }),
      ]);
    } catch (err) {
      return { refused: INTERNAL_HOST, detail: `the host could not be resolved: ${(err as { code?: string }).code ?? (err as Error).message}` };
    } finally {
      clearTimeout(timer);
    }
  }
  if (!addresses.length) return { refused: INTERNAL_HOST, detail: 'the host resolved to no address' };
  const refused = addresses.find((a) => !addressAllowed(a.address, allow));
  if (refused) return { refused: INTERNAL_HOST, detail: `the host resolves to ${refused.address}, an internal address` };
  const first = addresses[0]!;
  return { url, address: first.address, family: first.family === 6 ? 6 : 4 };
}
