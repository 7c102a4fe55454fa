import { openDatabase, type Database } from '../../src/storage/database.js';
import type { NewTokenRecord } from '../../src/storage/tokens-repo.js';
import type { TestDatabase } from './test-server.js';

/** An access token's record issued to `agent` (hash `hash-of-<jti>`), exchanged from `parent` when given. */
export const agentTokenRecord = (agent: string, jti: string, parent: string | null = null): NewTokenRecord => ({
  jti, type: 'access_token', sub: agent, client_id: agent, actor: null, parent_jti: parent, txn: null, scope: null, audience: ['a'],
  kid: 'k', iat: 1, exp: 4_000_000_000, token_hash: `hash-of-${jti}`, cnf_jkt: null,
});

/** Creates the test database, opens it with `poolMax` connections, migrates it and registers `agent`, active. */
export async function databaseWithAgent(tdb: TestDatabase, agent: string, poolMax: number): Promise<Database> {
  await tdb.create();
  const db = await openDatabase({ databaseUrl: tdb.url, dataDir: tdb.dataDir, poolMax });
  await db.migrate();
  await db.knex('agents').insert({
    id: agent, scopes: JSON.stringify([]), audiences: JSON.stringify(['a']), token_endpoint_auth_method: 'client_secret_basic',
    grant_types: JSON.stringify(['client_credentials']), max_delegation_depth: 3, agent_checksums: JSON.stringify([]),
  });
  return db;
}
