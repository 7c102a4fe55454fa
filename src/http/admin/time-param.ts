import { z } from 'zod';

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$/;
const EPOCH_SECONDS = /^\d{1,11}(\.\d{1,6})?$/;

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** An RFC 3339 date-time or epoch seconds, as epoch milliseconds; undefined when it is neither or not a real time. */
export function parseTime(value: string): number | undefined {
  if (EPOCH_SECONDS.test(value)) return Math.round(Number(value) * 1000);
  const m = RFC3339.exec(value);
  if (!m) return undefined;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const offset = m[8]!;
  if (month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || second > 60) return undefined;
  if (offset.length === 6 && (Number(offset.slice(1, 3)) > 23 || Number(offset.slice(4, 6)) > 59)) return undefined;
  const ms = Date.parse(value.replace(' ', 'T').replace(/:60(\.\d+)?(?=[Zz+-])/, ':59$1'));
  return Number.isFinite(ms) ? ms : undefined;
}

/** A query parameter holding a time: RFC 3339 or epoch seconds, to epoch milliseconds. */
export const timeParam = z.string().max(64).transform((v, ctx) => {
  const ms = parseTime(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: 'must be an RFC 3339 date-time (2026-01-31T12:00:00Z) or epoch seconds' });
    return z.NEVER;
  }
  return ms;
});
