import type { LookupAddress } from 'node:dns';
import { Resolver } from 'node:dns/promises';
import { open } from 'node:fs/promises';
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

/**
 * Resolves a host to its addresses. `signal` aborts when the caller gives up: a lookup should then stop (the
 * gate frees its turn at that moment either way).
 */
export type Lookup = (host: string, signal: AbortSignal) => Promise<LookupAddress[]>;

const HOSTS_FILE = process.platform === 'win32' ? `${process.env.SystemRoot ?? 'C:\\Windows'}\\System32\\drivers\\etc\\hosts` : '/etc/hosts';
/** The most of the hosts file read. */
const MAX_HOSTS_FILE = 1 << 20;

/** The addresses the hosts file gives a name (none when it does not list it or cannot be read). */
export async function hostsFileAddresses(host: string, file = HOSTS_FILE): Promise<LookupAddress[]> {
  let text: string;
  try {
    const handle = await open(file, 'r');
    try {
      const buf = Buffer.alloc(Math.min(MAX_HOSTS_FILE, (await handle.stat()).size));
      const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
      text = buf.subarray(0, bytesRead).toString('latin1');
    } finally {
      await handle.close();
    }
  } catch {
    return [];
  }
  const name = host.toLowerCase().replace(/\.$/, '');
  const found: LookupAddress[] = [];
  for (const line of text.split('\n')) {
    const [address, ...names] = line.replace(/#.*/, '').trim().split(/\s+/);
    const family = address ? isIP(address) : 0;
    if (!family || !names.some((n) => n.toLowerCase().replace(/\.$/, '') === name)) continue;
    if (!found.some((f) => f.address === address)) found.push({ address: address!, family });
  }
  return found;
}

/** DNS answers that mean "no such address", not a failure to find out. */
const NO_ADDRESS = new Set(['ENODATA', 'ENOTFOUND']);

/**
 * The server's resolver for push endpoints, every address: the hosts file; else `localhost` and names under it
 * are loopback (RFC 6761 §6.3, never asked of DNS); else DNS (A then AAAA, c-ares, the servers of resolv.conf,
 * the name as written: no search domains), the queries cancelled when `signal` aborts. `servers` replaces the
 * servers (tests). getaddrinfo is not used: it cannot be cancelled, so a name whose DNS server never answers would
 * hold a thread of libuv's small pool (shared with file and crypto work) for as long as the system's resolver
 * retries. Other sources the system may be configured with (mDNS, NIS) are not consulted.
 */
export function systemLookup(host: string, signal: AbortSignal, servers?: string[]): Promise<LookupAddress[]> {
  return resolveHost(host, signal, servers);
}

async function resolveHost(host: string, signal: AbortSignal, servers?: string[]): Promise<LookupAddress[]> {
  const listed = await hostsFileAddresses(host);
  if (listed.length) return listed;
  if (/(^|\.)localhost\.?$/i.test(host)) return [{ address: '127.0.0.1', family: 4 }, { address: '::1', family: 6 }];
  signal.throwIfAborted();
  const resolver = new Resolver({ timeout: 1000, tries: 2 });
  if (servers) resolver.setServers(servers);
  const cancel = () => resolver.cancel();
  signal.addEventListener('abort', cancel, { once: true });
  try {
    const answers = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    const failed = answers.find((a): a is PromiseRejectedResult => a.status === 'rejected' && !NO_ADDRESS.has((a.reason as { code?: string }).code ?? ''));
    if (failed) throw failed.reason;
    return answers.flatMap((a, i) => a.status === 'fulfilled' ? a.value.map((address) => ({ address, family: i === 0 ? 4 : 6 })) : []);
  } finally {
    signal.removeEventListener('abort', cancel);
  }
}

/** No turn to be had: `client` when it is the client's own lookup in progress that stands in the way. */
const busy = (message: string, client = false) => Object.assign(new Error(message), { code: 'EBUSY', client });

/**
 * Turns to look up push endpoint hosts: at most `running` lookups at once and `waiting` waiting, at most one per
 * key (a client) at a time. A caller giving up (its signal aborts) leaves the queue, or frees its turn at once.
 * `sameKey`: what a key's second lookup does while its first runs or waits, wait for it or be refused.
 */
export class LookupGate {
  private running = 0;
  private readonly busyKeys = new Set<string>();
  private readonly queue: { key: string; go: () => void; signal: AbortSignal; onAbort: () => void }[] = [];

  constructor(private readonly limits: { running: number; waiting: number; sameKey: 'wait' | 'refuse' }) {}

  /**
   * Runs `fn` in a turn, waiting for one at most `waitMs`; `fn` gets a signal that aborts after `runMs`, when its
   * turn ends whether or not it stopped. Rejects with code `EBUSY` when no turn may be had, `ETIMEOUT` when the
   * wait or the lookup took too long.
   */
  async run<T>(key: string, waitMs: number, runMs: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    await this.take(key, AbortSignal.timeout(waitMs));
    const signal = AbortSignal.timeout(runMs);
    let onAbort!: () => void;
    const stopped = new Promise<never>((_, reject) => {
      onAbort = () => reject(timedOut('the lookup timed out'));
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([fn(signal), stopped]);
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.release(key);
    }
  }

  private take(key: string, signal: AbortSignal): Promise<void> {
    const keyBusy = this.busyKeys.has(key) || this.queue.some((w) => w.key === key);
    if (keyBusy && this.limits.sameKey === 'refuse') return Promise.reject(busy('a lookup of this client is in progress', true));
    if (!keyBusy && this.running < this.limits.running) {
      this.running++;
      this.busyKeys.add(key);
      return Promise.resolve();
    }
    if (this.queue.length >= this.limits.waiting) return Promise.reject(busy('too many lookups waiting'));
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        key, signal,
        go: () => {
          signal.removeEventListener('abort', waiter.onAbort);
          resolve();
        },
        onAbort: () => {
          const i = this.queue.indexOf(waiter);
          if (i >= 0) this.queue.splice(i, 1);
          reject(timedOut('waited too long for a lookup'));
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  private release(key: string): void {
    this.running--;
    this.busyKeys.delete(key);
    // The first waiter whose key has no lookup running takes the turn.
    while (this.running < this.limits.running) {
      const i = this.queue.findIndex((w) => !this.busyKeys.has(w.key));
      if (i < 0) return;
      const [next] = this.queue.splice(i, 1);
      this.running++;
      this.busyKeys.add(next!.key);
      next!.go();
    }
  }

  /** Lookups running and waiting (for tests and metrics). */
  get load(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.queue.length };
  }
}

const timedOut = (message: string) => Object.assign(new Error(message), { code: 'ETIMEOUT' });

/** A push endpoint checked: the address to connect to. */
export interface PushTarget {
  url: URL;
  address: string;
  family: 4 | 6;
}

/** Why a push endpoint's host may not be used (said to the receiver without the addresses it resolved to). */
export const INTERNAL_HOST = 'endpoint_url: the host must resolve to public addresses only (loopback, private, link-local and other internal addresses are refused unless the server allows them)';

/** A push endpoint refused: why (said to the receiver), what was found (logged), and whether it was only no lookup to be had now. */
export interface PushRefusal {
  refused: string;
  detail: string;
  /** No lookup could be made now: `client` while another of the same client's is in progress, `server` when every turn is taken. */
  busy?: 'client' | 'server';
}

/**
 * Resolves a push endpoint's host (`resolve` bounds its time) and checks every address it resolves to; the
 * first is the one to connect to. An IP literal is checked as it is; a `.invalid` name (RFC 6761) is
 * refused without a lookup.
 */
export async function resolvePushTarget(url: URL, allow: BlockList, resolve: (host: string) => Promise<LookupAddress[]>): Promise<PushTarget | PushRefusal> {
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  let addresses: LookupAddress[];
  if (isIP(host)) {
    addresses = [{ address: host, family: isIP(host) }];
  } else if (/(^|\.)invalid\.?$/i.test(host)) {
    return { refused: INTERNAL_HOST, detail: 'a .invalid name does not resolve' };
  } else {
    try {
      addresses = await resolve(host);
    } catch (err) {
      const e = err as { code?: string; client?: boolean; message: string };
      return {
        refused: INTERNAL_HOST, detail: `the host could not be resolved: ${e.code ?? e.message}`,
        ...(e.code === 'EBUSY' ? { busy: e.client ? 'client' as const : 'server' as const } : {}),
      };
    }
  }
  if (!addresses.length) return { refused: INTERNAL_HOST, detail: 'the host resolved to no address' };
  const refused = addresses.find((a) => !addressAllowed(a.address, allow));
  if (refused) return { refused: INTERNAL_HOST, detail: `the host resolves to ${refused.address}, an internal address` };
  const first = addresses[0]!;
  return { url, address: first.address, family: first.family === 6 ? 6 : 4 };
}
