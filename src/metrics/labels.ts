/**
 * Label values with a bounded number of distinct values: a value is kept when it is allowed (or, with no
 * list, when it looks like an identifier) and fewer than `max` distinct values were seen; anything else is
 * `other`. Label values never carry request data beyond these short, known names.
 */
export class BoundedLabel {
  private readonly seen = new Set<string>();

  constructor(private readonly opts: { allowed?: ReadonlySet<string>; max: number; pattern?: RegExp }) {}

  value(raw: string | null | undefined): string {
    if (!raw) return 'none';
    if (this.seen.has(raw)) return raw;
    const ok = this.opts.allowed ? this.opts.allowed.has(raw) : (this.opts.pattern ?? IDENTIFIER).test(raw);
    if (!ok || this.seen.size >= this.opts.max) return 'other';
    this.seen.add(raw);
    return raw;
  }
}

const IDENTIFIER = /^[a-z][a-z0-9_]{0,63}$/;

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export const methodLabel = (method: string) => (METHODS.has(method) ? method : 'other');

export const statusClass = (status: number) => (status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other');

/**
 * The action of a decision event as a label: `token:<grant type>` keeps the grant type only when it is one the
 * server offers (the client chooses it), other actions are names the server sets, kept when they look like
 * `name` or `name:/path`.
 */
export class ActionLabel {
  private readonly others = new BoundedLabel({ max: 32, pattern: /^[a-z][a-z0-9_.]{0,63}(:\/[a-z0-9_/-]{0,63})?$/ });

  constructor(private readonly grantTypes: ReadonlySet<string>) {}

  value(action: string): string {
    if (action.startsWith('token:')) {
      const grant = action.slice('token:'.length);
      return this.grantTypes.has(grant) ? action : 'token:other';
    }
    return this.others.value(action);
  }
}
