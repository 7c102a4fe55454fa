import { bodyParser } from '@koa/bodyparser';
import type { Context, Next } from 'koa';
import { ApiError } from '../errors.js';

const parse = bodyParser({ enableTypes: ['json'], jsonLimit: '64kb', encoding: 'utf-8' });

/** A JSON request body of at most 64 kB; any other content type is a 415. */
export async function jsonBody(ctx: Context, next: Next): Promise<void> {
  if (!ctx.is('application/json')) {
    throw new ApiError(415, 'unsupported_media_type', 'the body must be application/json');
  }
  await parse(ctx, next);
}
