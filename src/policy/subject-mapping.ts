import type { PartnerDomain } from '../config/config.js';

/** The local subject a partner domain's subject maps to by its configured rules; undefined when none applies. */
export function mapPartnerSubject(partner: PartnerDomain, sub: string): string | undefined {
  const exact = partner.subject_map?.[sub];
  if (exact) return exact;
  for (const rule of partner.subject_prefixes ?? []) {
    if (sub.startsWith(rule.from) && sub.length > rule.from.length) return `${rule.to}${sub.slice(rule.from.length)}`;
  }
  return undefined;
}
