import { z } from 'zod';
import { ApiError } from '../errors.js';

function parseStrict<T extends z.ZodRawShape>(shape: T, input: unknown, what: string): z.infer<z.ZodObject<T>> {
  const parsed = z.object(shape).strict().safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const msg = issue.code === 'unrecognized_keys' ? `unknown ${what}: ${issue.keys.join(', ')}` : `${issue.path.length ? `${issue.path.join('.')}: ` : ''}${issue.message}`;
    throw new ApiError(400, 'invalid_request', msg);
  }
  return parsed.data;
}

/** Parses a query string against a strict schema; unknown or malformed parameters are a 400. */
export function parseQuery<T extends z.ZodRawShape>(shape: T, query: Record<string, unknown>): z.infer<z.ZodObject<T>> {
  return parseStrict(shape, query, 'query parameter');
}

/** Parses a small JSON body against a strict schema; unknown or malformed fields are a 400. */
export function parseBody<T extends z.ZodRawShape>(shape: T, body: unknown): z.infer<z.ZodObject<T>> {
  return parseStrict(shape, body, 'field');
}

export const limitParam = z.coerce.number().int().min(1).max(1000).default(100);
export const textParam = z.string().min(1).max(2048).refine((v) => !v.includes('\u0000'), 'must not contain NUL characters');
