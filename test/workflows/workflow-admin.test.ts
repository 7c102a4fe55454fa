import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentId, startTestServer, type TestServer } from '../support/test-server.js';

const A = agentId('a');
const B = agentId('b');
const CHECKSUM = 'x'.repeat(43);
const steps = [
  { id: 'one', agent: A, tool: 't.one', scopes: ['s1'] },
  { id: 'two', agent: B, tool: 't.two', scopes: ['s2'], depends_on: ['one'] },
];

describe('admin API: workflows', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer();
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('registers versions, keeps the old ones and shows the latest by default', async () => {
    const v1 = await ts.admin('POST', '/admin/workflows', { id: 'flow', version: 1, steps, agent_checksums: { [A]: [CHECKSUM] } });
    expect(v1.status, JSON.stringify(v1.body)).toBe(201);
    expect(v1.headers.get('location')).toBe('/admin/workflows/flow?version=1');
    expect(v1.body).toMatchObject({
      id: 'flow', version: 1, agent_checksums: { [A]: [CHECKSUM] },
      steps: [{ id: 'one', agent: A, tool: 't.one', scopes: ['s1'], depends_on: [], approval: false, repeatable: false }, { id: 'two', depends_on: ['one'] }],
    });
    const taken = await ts.admin('POST', '/admin/workflows', { id: 'flow', version: 1, steps });
    expect(taken.status).toBe(409);
    expect(taken.body.error_description).toBe('workflow flow already has a version 1; register a new version');
    expect((await ts.admin('POST', '/admin/workflows', { id: 'flow', version: 2, steps: [steps[0]] })).status).toBe(201);
    expect((await ts.admin('POST', '/admin/workflows', { id: 'another', version: 1, steps: [steps[0]] })).status).toBe(201);

    const latest = await ts.admin('GET', '/admin/workflows/flow');
    expect(latest.body).toMatchObject({ id: 'flow', version: 2, versions: [2, 1] });
    expect(latest.body.steps).toHaveLength(1);
    expect((await ts.admin('GET', '/admin/workflows/flow?version=1')).body.steps).toHaveLength(2);
    expect((await ts.admin('GET', '/admin/workflows/flow?version=3')).status).toBe(404);
    expect((await ts.admin('GET', '/admin/workflows/none')).status).toBe(404);
    expect((await ts.admin('GET', '/admin/workflows/flow?version=x')).status).toBe(400);
    const list = await ts.admin('GET', '/admin/workflows');
    expect(list.body.workflows.map((w: { id: string; version: number }) => [w.id, w.version])).toEqual([['another', 1], ['flow', 2]]);
    const page = await ts.admin('GET', '/admin/workflows?limit=1');
    expect(page.body).toMatchObject({ workflows: [{ id: 'another' }], next: 'another' });
    expect((await ts.admin('GET', '/admin/workflows?limit=1&after=another')).body.workflows[0].id).toBe('flow');
    const events = (await ts.admin('GET', '/admin/events?decision=admin')).body.events as { action: string; detail: string }[];
    expect(events.filter((e) => e.action === 'workflow.register').map((e) => e.detail)).toEqual(['another version 1', 'flow version 2', 'flow version 1']);

    const run = await ts.admin('GET', '/admin/workflows/flow/runs/no-such-txn?version=1');
    expect(run.status).toBe(200);
    expect(run.body).toMatchObject({ workflow_version: 1, steps: [{ id: 'one', status: 'not_issued', issued: [] }, { id: 'two', status: 'not_issued' }], refusals: [] });
    expect((await ts.admin('GET', '/admin/workflows/none/runs/t')).status).toBe(404);
  });

  it.each([
    ['an unknown field', { id: 'bad', version: 1, steps, owner: 'x' }, 'unknown field: owner'],
    ['an unknown step field', { id: 'bad', version: 1, steps: [{ ...steps[0], budget: 3 }] }, 'steps.0: unknown field: budget'],
    ['no version', { id: 'bad', steps }, 'version: version is required (an integer from 1)'],
    ['a version of 0', { id: 'bad', version: 0, steps }, 'version:'],
    ['a bad id', { id: 'has space', version: 1, steps }, 'id: must be'],
    ['no steps', { id: 'bad', version: 1, steps: [] }, 'steps: a workflow needs at least one step'],
    ['a repeated step id', { id: 'bad', version: 1, steps: [steps[0], { ...steps[1], id: 'one' }] }, 'steps.1.id: step id "one" is used twice'],
    ['a dependency on a missing step', { id: 'bad', version: 1, steps: [{ ...steps[0], depends_on: ['zero'] }] }, 'steps.0.depends_on: no step "zero" in this workflow'],
    ['a dependency cycle', { id: 'bad', version: 1, steps: [{ ...steps[0], depends_on: ['two'] }, steps[1]] }, 'steps: depends_on forms a cycle: one → two → one'],
    ['a step depending on itself', { id: 'bad', version: 1, steps: [{ ...steps[0], depends_on: ['one'] }] }, 'cycle: one → one'],
    ['an agent of another trust domain', { id: 'bad', version: 1, steps: [{ ...steps[0], agent: 'spiffe://elsewhere.test/agents/a' }] }, 'steps.0.agent: trust domain elsewhere.test is not this server\'s'],
    ['an agent that is no workload id', { id: 'bad', version: 1, steps: [{ ...steps[0], agent: 'https://a.example/' }] }, 'steps.0.agent: must be a spiffe://'],
    ['a step without scopes', { id: 'bad', version: 1, steps: [{ ...steps[0], scopes: [] }] }, 'steps.0.scopes: a step needs at least one scope'],
    ['a bad scope', { id: 'bad', version: 1, steps: [{ ...steps[0], scopes: ['a b'] }] }, 'steps.0.scopes.0:'],
    ['approval that is not a boolean', { id: 'bad', version: 1, steps: [{ ...steps[0], approval: 'yes' }] }, 'steps.0.approval:'],
    ['checksums of an agent running no step', { id: 'bad', version: 1, steps, agent_checksums: { [agentId('c')]: [CHECKSUM] } }, 'runs no step of this workflow'],
    ['a malformed checksum', { id: 'bad', version: 1, steps, agent_checksums: { [A]: ['short'] } }, 'each agent checksum must be a base64url SHA-256'],
    ['not an object', [1, 2], 'expected object'],
  ])('refuses %s with a 400 and writes nothing', async (_what, body, message) => {
    const res = await ts.admin('POST', '/admin/workflows', body);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toBe('invalid_request');
    expect(res.body.error_description).toContain(message);
    expect((await ts.admin('GET', '/admin/workflows/bad')).status).toBe(404);
  });

  it('refuses NUL characters, other media types and a missing admin token', async () => {
    const nul = await ts.admin('POST', '/admin/workflows', { id: 'bad', version: 1, steps: [{ ...steps[0], tool: 'x', scopes: ['s1'] }], agent_checksums: { [`${A}\u0000`]: [CHECKSUM] } });
    expect(nul.status).toBe(400);
    expect((await ts.admin('POST', '/admin/workflows', 'id=x', { 'content-type': 'application/x-www-form-urlencoded' })).status).toBe(415);
    expect((await fetch(`${ts.url}/admin/workflows`)).status).toBe(401);
    expect((await ts.admin('GET', '/admin/workflows/flow%00x')).status).toBe(404);
    expect((await ts.admin('GET', '/admin/workflows/flow/runs/a%00b')).body).toMatchObject({ txn: 'a\u0000b', refusals: [] });
  });
});
