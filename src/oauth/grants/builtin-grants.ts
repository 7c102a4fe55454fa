import type Provider from 'oidc-provider';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';

/** oidc-provider's grant helpers bound to `provider`, as its built-in grant handlers take them. */
export function boundGrantHelpers(provider: Provider): Record<string, unknown> {
  return Object.fromEntries(Object.entries(grantHelpers).map(([name, helper]) => [name, helper.bind(undefined, provider)]));
}
