import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type Router from '@koa/router';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { agentsRoutes } from '../../src/http/admin/agents-routes.js';
import { keysRoutes } from '../../src/http/admin/keys-routes.js';
import { tokensRoutes } from '../../src/http/admin/tokens-routes.js';
import { biscuitAdminRoutes } from '../../src/http/biscuit-routes.js';
import { auditRoutes } from '../../src/http/admin/audit-routes.js';
import { workflowsRoutes } from '../../src/http/admin/workflows-routes.js';
import { ssfRoutes } from '../../src/http/ssf-routes.js';
import { approversRoutes } from '../../src/http/admin/approvers-routes.js';
import { GRANT_TYPES, SUBJECT_TOKEN_TYPES } from '../../src/identity/agent-registration.js';
import { REQUESTED_TOKEN_TYPES, SUBJECT_TOKEN_TYPES_IN_USE } from '../../src/oauth/grants/token-exchange.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

interface OpenApiDoc {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, unknown>; securitySchemes: Record<string, { type: string; scheme?: string }> };
}

const doc = parse(readFileSync(`${ROOT}openapi.yaml`, 'utf8')) as OpenApiDoc;

/** Every endpoint the server exposes, with its methods (OPTIONS preflight and HEAD aside). */
const ENDPOINTS: Record<string, string[]> = {
  '/healthz': ['get'],
  '/readyz': ['get'],
  '/jwks': ['get'],
  '/metrics': ['get'],
  '/.well-known/oauth-authorization-server': ['get'],
  '/.well-known/openid-configuration': ['get'],
  '/token': ['post'],
  '/token/introspection': ['post'],
  '/token/revocation': ['post'],
  '/wit': ['post'],
  '/biscuit/revocations': ['get'],
  '/backchannel': ['post'],
  '/approvals': ['get'],
  '/approvals/{id}': ['get'],
  '/approvals/{id}/approve': ['post'],
  '/approvals/{id}/deny': ['post'],
  '/approve': ['get'],
  '/approve/login': ['post'],
  '/approve/logout': ['post'],
  '/approve/{id}': ['post'],
  '/admin/agents': ['get', 'post'],
  '/admin/agents/{id}': ['delete', 'get', 'patch'],
  '/admin/agents/{id}/secret': ['post'],
  '/admin/agents/{id}/join-tokens': ['post'],
  '/admin/keys': ['get'],
  '/admin/keys/rotate': ['post'],
  '/admin/tokens': ['get'],
  '/admin/tokens/{jti}': ['get'],
  '/admin/tokens/{jti}/lineage': ['get'],
  '/admin/tokens/{jti}/revoke': ['post'],
  '/admin/biscuits/revocations': ['post'],
  '/admin/workflows': ['get', 'post'],
  '/admin/workflows/{id}': ['get'],
  '/admin/workflows/{id}/runs/{txn}': ['get'],
  '/admin/approvers': ['get', 'post'],
  '/admin/approvers/{id}': ['delete', 'get'],
  '/admin/approvers/{id}/credential': ['post'],
  '/admin/events': ['get'],
  '/admin/audit': ['get'],
  '/.well-known/ssf-configuration': ['get'],
  '/ssf/streams': ['delete', 'get', 'patch', 'post', 'put'],
  '/ssf/status': ['get', 'post'],
  '/ssf/subjects/add': ['post'],
  '/ssf/subjects/remove': ['post'],
  '/ssf/verify': ['post'],
  '/ssf/poll/{stream_id}': ['post'],
};

const methodsOf = (path: string) => Object.keys(doc.paths[path] ?? {}).filter((k) => HTTP_METHODS.includes(k)).sort();

describe('openapi.yaml', () => {
  it('is an OpenAPI 3.1 document', () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
  });

  it('describes every endpoint with exactly its methods, and nothing else', () => {
    for (const [path, methods] of Object.entries(ENDPOINTS)) {
      expect(methodsOf(path), path).toEqual(methods);
    }
    expect(Object.keys(doc.paths).sort()).toEqual(Object.keys(ENDPOINTS).sort());
  });

  it('describes the routes the admin routers register', () => {
    const unused = {} as never;
    const routers: Router[] = [agentsRoutes(unused), keysRoutes(unused, unused, 0, async () => {}), tokensRoutes(unused, unused), biscuitAdminRoutes(unused, unused, () => 0), auditRoutes(unused, unused), workflowsRoutes(unused), approversRoutes(unused)];
    const registered = routers.flatMap((r) => r.stack.flatMap((layer) => layer.methods
      .filter((m) => m !== 'HEAD')
      .map((m) => `${m.toLowerCase()} ${String(layer.path).replace(/:(\w+)/g, '{$1}')}`)));
    const documented = Object.keys(ENDPOINTS).filter((p) => p.startsWith('/admin/')).flatMap((p) => methodsOf(p).map((m) => `${m} ${p}`));
    expect(registered.sort()).toEqual(documented.sort());
  });

  it('describes the routes the Shared Signals router registers', () => {
    const unused = {} as never;
    const registered = ssfRoutes(unused, (async () => {}) as never).stack.flatMap((layer) => layer.methods
      .filter((m) => m !== 'HEAD')
      .map((m) => `${m.toLowerCase()} ${String(layer.path).replace(/:(\w+)/g, '{$1}')}`));
    const documented = Object.keys(ENDPOINTS).filter((p) => p.startsWith('/ssf/') || p === '/.well-known/ssf-configuration').flatMap((p) => methodsOf(p).map((m) => `${m} ${p}`));
    expect(registered.sort()).toEqual(documented.sort());
  });

  it('has the shared schemas and security schemes', () => {
    for (const name of [
      'Agent', 'AgentRegistration', 'AgentPatch', 'TokenExchangePolicy', 'TokenRecord', 'ActClaim', 'DecisionEvent', 'SigningKey', 'Jwks', 'Error',
      'Workflow', 'WorkflowRegistration', 'WorkflowRun', 'IntentClaim', 'WorkflowTokenParams', 'TokenRequest', 'TokenExchangeRequest', 'JwtBearerTokenRequest', 'TokenResponse', 'IntrospectionResponse', 'ServerMetadata', 'AuditLine',
      'Approval', 'Approver', 'ApprovalDecision',
    ]) {
      expect(doc.components.schemas, name).toHaveProperty(name);
    }
    expect(doc.components.securitySchemes.adminToken).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.components.securitySchemes.oauthClient).toMatchObject({ type: 'http', scheme: 'basic' });
    expect(doc.components.securitySchemes.approverCredential).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.components.securitySchemes.approverSession).toMatchObject({ type: 'apiKey', in: 'cookie' });
  });

  it('lists exactly the grant types and token types the code accepts', () => {
    const schema = (name: string) => doc.components.schemas[name] as { enum?: string[]; allOf?: { properties?: Record<string, { enum?: string[] }> }[] };
    expect([...schema('GrantType').enum!].sort()).toEqual([...GRANT_TYPES].sort());
    expect([...schema('SubjectTokenType').enum!].sort()).toEqual([...SUBJECT_TOKEN_TYPES_IN_USE].sort());
    expect([...schema('SubjectTokenType').enum!].sort()).toEqual([...SUBJECT_TOKEN_TYPES].sort());
    const exchange = schema('TokenExchangeRequest').allOf!.find((s) => s.properties?.requested_token_type)!;
    expect(exchange.properties!.requested_token_type!.enum).toEqual(REQUESTED_TOKEN_TYPES);
  });

  it('passes the Redocly lint with no errors and no warnings', async () => {
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        `${ROOT}node_modules/.bin/redocly`,
        ['lint', 'openapi.yaml', '--format=json'],
        {
          cwd: ROOT,
          timeout: 60_000,
          maxBuffer: 16 * 1024 * 1024,
          env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' },
        },
        // The exit status is non-zero when there are errors; the JSON report tells which.
        (err, out, errOut) => (out.trim() ? resolve(out) : reject(err ?? new Error(`no lint report: ${errOut}`))),
      );
    });
    const report = JSON.parse(stdout) as { totals: { errors: number; warnings: number }; problems: { ruleId: string; message: string; location?: { pointer?: string }[] }[] };
    const problems = report.problems.map((p) => `${p.ruleId} ${p.location?.[0]?.pointer ?? ''}: ${p.message}`);
    expect(problems).toEqual([]);
    expect(report.totals).toMatchObject({ errors: 0, warnings: 0 });
  }, 70_000);
});
