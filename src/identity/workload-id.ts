/**
 * Workload identifiers (draft-ietf-wimse-identifier): absolute `spiffe://` or `wimse://` URIs
 * whose authority is the trust domain, with a path, and no query, fragment, userinfo or port.
 */
export interface WorkloadId {
  scheme: 'spiffe' | 'wimse';
  trustDomain: string;
  path: string;
}

const MAX_BYTES = 2048;
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;

/** Parses a workload identifier; returns a reason string when it is not one. */
export function parseWorkloadId(value: string): WorkloadId | string {
  if (Buffer.byteLength(value) > MAX_BYTES) return `must be at most ${MAX_BYTES} bytes`;
  const m = /^(spiffe|wimse):\/\/([^/?#]*)(\/[^?#]*)?$/.exec(value);
  if (!m) return 'must be a spiffe://<trust-domain>/<path> or wimse://<trust-domain>/<path> URI without query or fragment';
  const [, scheme, authority = '', path = ''] = m;
  if (authority.includes('@')) return 'must not contain userinfo';
  if (authority.includes(':')) return 'must not contain a port';
  if (!TRUST_DOMAIN.test(authority)) return 'trust domain must be lower-case letters, digits, dots, dashes and underscores';
  if (path === '' || path === '/') return 'must have a path naming the workload';
  if (path.endsWith('/')) return 'path must not end with a slash';
  for (const segment of path.slice(1).split('/')) {
    if (segment === '') return 'path must not contain empty segments';
    if (segment === '.' || segment === '..') return 'path must not contain . or .. segments';
    if (!SEGMENT.test(segment)) return 'path segments may hold only letters, digits, dots, dashes and underscores';
  }
  return { scheme: scheme as WorkloadId['scheme'], trustDomain: authority, path };
}
