import compose from 'koa-compose';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { KeyManager } from '../keys/key-manager.js';
import { buildProvider, type ProviderDeps } from './provider.js';

/**
 * Holds the current oidc-provider instance and its koa middleware. After a key rotation,
 * `reload()` builds a provider for the new keys and switches to it; requests in flight finish on the old one.
 */
export class OAuthCore {
  private provider!: Provider;
  private handler!: (ctx: Context, next: Next) => Promise<unknown>;

  constructor(private readonly deps: Omit<ProviderDeps, 'signingKeys'>, private readonly keys: KeyManager) {
    this.reload();
  }

  get current(): Provider {
    return this.provider;
  }

  reload(): void {
    const provider = buildProvider({ ...this.deps, signingKeys: this.keys.signers() });
    this.handler = compose((provider as unknown as { middleware: Parameters<typeof compose>[0] }).middleware) as unknown as typeof this.handler;
    this.provider = provider;
  }

  middleware() {
    return (ctx: Context, next: Next) => this.handler(ctx, next);
  }
}
