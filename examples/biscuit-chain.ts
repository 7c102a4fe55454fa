/**
 * A Biscuit delegation chain against a running agent-sts: an orchestrator gets a Biscuit by token exchange,
 * narrows it offline for a specialist with its own key, the specialist hands it on through the token
 * endpoint to a tool agent, and a resource server verifies the whole chain offline.
 *
 *   npm start                     # agent-sts on http://localhost:8080 (data/admin-token holds the admin token)
 *   ADMIN=$(cat data/admin-token) npx tsx examples/biscuit-chain.ts
 */
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { delegate, BISCUIT_TOKEN_TYPE } from '../src/tokens/biscuit.js';
import { Verifier } from '../src/verifier/index.js';

const AS = process.env.AS ?? 'http://localhost:8080';
const ADMIN = process.env.ADMIN!;
const TRUST_DOMAIN = process.env.TRUST_DOMAIN ?? 'agent-sts.local';
const TOOLS = 'https://tools.example.com/mcp';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const run = Date.now().toString(36);
const id = (name: string) => `spiffe://${TRUST_DOMAIN}/examples/${name}-${run}`;

async function register(name: string, body: Record<string, unknown>): Promise<{ id: string; auth: string }> {
  const res = await fetch(`${AS}/admin/agents`, {
    method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ id: id(name), audiences: [TOOLS], grant_types: ['client_credentials', TX], ...body }),
  });
  const created = (await res.json()) as { client_secret: string; error_description?: string };
  if (res.status !== 201) throw new Error(`registering ${name}: ${created.error_description}`);
  return { id: id(name), auth: `Basic ${Buffer.from(`${encodeURIComponent(id(name))}:${encodeURIComponent(created.client_secret)}`).toString('base64')}` };
}

async function token(auth: string, form: Record<string, string>): Promise<Record<string, string>> {
  const res = await fetch(`${AS}/token`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form) });
  const body = (await res.json()) as Record<string, string>;
  if (res.status !== 200) throw new Error(`${form.grant_type}: ${body.error}: ${body.error_description}`);
  return body;
}

const orchestratorKey = await exportJWK((await generateKeyPair('EdDSA', { extractable: true, crv: 'Ed25519' })).privateKey);
const { d: _private, ...orchestratorPublic } = orchestratorKey;
const orchestrator = await register('orchestrator', {
  scopes: ['tool:search', 'tool:read', 'tool:delete'], jwks: { keys: [{ ...orchestratorPublic, alg: 'EdDSA' } as JWK] }, token_exchange: { max_budget: 5000 },
});
const specialist = await register('specialist', { scopes: ['tool:search', 'tool:read'] });
const tool = await register('tool-agent', { scopes: ['tool:read'] });

// 1. The orchestrator turns its access token into a Biscuit it holds (with its key, so it can delegate offline).
const own = await token(orchestrator.auth, { grant_type: 'client_credentials', resource: TOOLS });
const minted = await token(orchestrator.auth, {
  grant_type: TX, subject_token: own.access_token!, subject_token_type: AT, requested_token_type: BISCUIT_TOKEN_TYPE, budget: '2000',
});
console.log('minted:', minted.scope, `(${Buffer.from(minted.access_token!, 'base64url').length} bytes)`);

// 2. Offline: the orchestrator narrows it for the specialist and signs the block with its own key.
const jwks = (await (await fetch(`${AS}/jwks`)).json()) as { keys: JWK[] };
const forSpecialist = await delegate(minted.access_token!, { delegate: specialist.id, tools: ['tool:search', 'tool:read'], budget: 500, context: 'find the order' }, orchestratorKey, jwks);

// 3. Through the token endpoint: the specialist hands it to the tool agent, named by the tool agent's own token.
const toolOwn = await token(tool.auth, { grant_type: 'client_credentials', resource: TOOLS });
const forTool = await token(specialist.auth, {
  grant_type: TX, subject_token: forSpecialist, subject_token_type: BISCUIT_TOKEN_TYPE, requested_token_type: BISCUIT_TOKEN_TYPE,
  actor_token: toolOwn.access_token!, actor_token_type: AT, scope: 'tool:read', context: 'read the order',
});

// 4. The resource server checks the whole chain offline with the root key from the JWKS.
const verifier = new Verifier({ issuer: AS, audience: TOOLS });
const verified = await verifier.verifyBiscuit(forTool.access_token!, { tools: ['tool:read'], spend: 100 });
console.log('verified: subject', verified.subject, 'held by', verified.clientId, 'via', verified.actors.slice(1).join(' <- '));
for (const hop of verified.chain!.hops) console.log(`  hop ${hop.index}: ${hop.delegator} -> ${hop.delegate} (${hop.signedBy}): ${hop.context}`);
await verifier.verifyBiscuit(forTool.access_token!, { tools: ['tool:search'] }).catch((err: Error) => console.log('tool:search refused:', err.message));
