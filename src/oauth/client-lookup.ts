import type Provider from 'oidc-provider';
import type { Adapter } from 'oidc-provider';

type ClientClass = { find(id: unknown): Promise<unknown> };

/**
 * oidc-provider serializes and hashes a client's metadata on every lookup to find the Client it built from
 * it. Our adapter hands out one metadata object per agent record for as long as the record is cached
 * (adapter.ts), so the Client built from that object is kept with it and found again without that work.
 * A changed agent is a new record, hence new metadata and a new Client.
 */
export function reuseClientsPerMetadata(provider: Provider, clients: Adapter): void {
  const Client = provider.Client as unknown as ClientClass;
  const find = Client.find.bind(Client);
  const built = new WeakMap<object, unknown>();
  Client.find = async (id) => {
    if (typeof id !== 'string' || !id) return undefined;
    const metadata = await clients.find(id);
    if (!metadata) return undefined;
    const known = built.get(metadata);
    if (known) return known;
    const client = await find(id);
    if (client) built.set(metadata, client);
    return client;
  };
}
