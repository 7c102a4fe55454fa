/** PostgreSQL text and jsonb values can't hold U+0000: a query comparing with such a string fails instead of matching nothing. */
export const hasNul = (value: string) => value.includes('\u0000');

/** Request-derived text for a record (an audit event): U+0000, which PostgreSQL can't store, is kept as U+FFFD. */
export const storableText = (value: string) => value.replaceAll('\u0000', '\uFFFD');
