import { bodyParser } from '@koa/bodyparser';
import type { Context, Next } from 'koa';
import { ApiError } from '../errors.js';

const parse = bodyParser({ enableTypes: ['json'], jsonLimit: '64kb', encoding: 'utf-8' });

/** A JSON request body of at most 64 kB; any other content type is a 415, an unreadable body a 400. */
export async function jsonBody(ctx: Context, next: Next): Promise<void> {
  if (!ctx.is('application/json')) {
    throw new ApiError(415, 'unsupported_media_type', 'the body must be application/json');
  }
  try {
    await parse(ctx, async () => {});
  } catch (err) {
    const e = err as Error & { status?: number; type?: string };
    if (e.status === 413) throw new ApiError(413, 'request_too_large', 'the body is larger than 64 kB');
    if (e.status === 415) throw new ApiError(415, 'unsupported_media_type', 'unsupported Content-Encoding: send identity, gzip, deflate or br');
    if (e.type === 'entity.parse.failed' || e instanceof SyntaxError) throw new ApiError(400, 'invalid_request', 'the body is not valid JSON, or holds a reserved key such as __proto__');
    throw new ApiError(400, 'invalid_request', 'the body could not be read (bad encoding or truncated)');
  }
  await next();
}

/** Like {@link jsonBody}, for requests whose body may be left out. */
export async function optionalJsonBody(ctx: Context, next: Next): Promise<void> {
  if (!ctx.request.length && !ctx.get('transfer-encoding')) return next();
  return jsonBody(ctx, next);
}
