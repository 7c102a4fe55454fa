import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (file: string) => readFileSync(`${ROOT}${file}`, 'utf8');

interface Service {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  environment?: Record<string, string> | string[];
  healthcheck?: { test?: string | string[] };
  depends_on?: string[] | Record<string, { condition?: string }>;
  ports?: (string | number)[];
}

const compose = parse(read('docker-compose.yml')) as { services: Record<string, Service> };

/** A service's environment as a map, whichever of the two compose forms it uses. */
function env(service: Service): Record<string, string> {
  const e = service.environment ?? {};
  if (!Array.isArray(e)) return e;
  return Object.fromEntries(e.map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
}

const testCommand = (service: Service) => [service.healthcheck?.test ?? []].flat().join(' ');

/** The Dockerfile's instructions, line continuations joined, comments dropped. */
const dockerfile = read('Dockerfile').replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
const instructions = (name: string) => dockerfile.filter((l) => l.toUpperCase().startsWith(`${name} `)).map((l) => l.slice(name.length + 1).trim());

describe('docker-compose.yml', () => {
  const postgres = compose.services.postgres!;
  const server = compose.services['agent-sts']!;

  it('runs postgres:16 with a password and a pg_isready healthcheck', () => {
    expect(postgres.image).toBe('postgres:16');
    expect(env(postgres).POSTGRES_PASSWORD).toBeTruthy();
    expect(testCommand(postgres)).toContain('pg_isready');
  });

  it('builds the server from the Dockerfile and publishes port 8080', () => {
    const context = typeof server.build === 'string' ? server.build : server.build?.context;
    expect(context).toBe('.');
    expect(server.ports?.map(String)).toContain('8080:8080');
  });

  it('starts the server once postgres is healthy and checks its readiness', () => {
    expect(server.depends_on).toMatchObject({ postgres: { condition: 'service_healthy' } });
    expect(testCommand(server)).toContain('/readyz');
  });

  it('points the server at the postgres service with the same password', () => {
    const vars = env(server);
    const m = /^postgres:\/\/postgres:(.+)@postgres:5432\/postgres$/.exec(vars.DATABASE_URL ?? '');
    expect(m, vars.DATABASE_URL).not.toBeNull();
    expect(m![1]).toBe(env(postgres).POSTGRES_PASSWORD);
    expect(vars.ISSUER).toBe('http://localhost:8080');
  });

  it('requires the admin token from the environment and passes the key encryption key through', () => {
    const vars = env(server);
    expect(vars.AGENT_STS_ADMIN_TOKEN).toMatch(/^\$\{AGENT_STS_ADMIN_TOKEN:\?.+\}$/);
    expect(vars.AGENT_STS_KEY_ENCRYPTION_KEY).toMatch(/^\$\{AGENT_STS_KEY_ENCRYPTION_KEY:?-\}$/);
  });
});

describe('Dockerfile', () => {
  it('builds in one node:24-bookworm-slim stage (the supported LTS line) and runs in another with production dependencies', () => {
    const from = instructions('FROM');
    expect(from.length).toBeGreaterThanOrEqual(2);
    for (const f of from) expect(f).toMatch(/^node:24-bookworm-slim\b/);
    const run = instructions('RUN').join('\n');
    expect(run).toContain('npm ci');
    expect(run).toContain('npm run build');
    expect(run).toContain('npm ci --omit=dev');
    expect(instructions('COPY').some((c) => /^--from=\S+ \S*dist\S* /.test(c))).toBe(true);
  });

  it('has the dependency patches in place before each npm ci, whose postinstall applies them', () => {
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(pkg.scripts.postinstall).toBe('node patches/apply.mjs');
    const steps = dockerfile.filter((l) => /^(FROM|COPY|RUN) /i.test(l));
    const installs = steps.flatMap((l, i) => (/^RUN npm ci\b/.test(l) ? [i] : []));
    expect(installs).toHaveLength(2);
    for (const i of installs) {
      const stage = steps.slice(0, i).findLastIndex((l) => l.startsWith('FROM '));
      expect(steps.slice(stage, i)).toContain('COPY patches ./patches');
    }
  });

  it('runs as the node user on port 8080 with a healthcheck', () => {
    expect(instructions('USER')).toEqual(['node']);
    expect(instructions('EXPOSE')).toEqual(['8080']);
    const healthcheck = instructions('HEALTHCHECK').join(' ');
    expect(healthcheck).toContain('fetch(');
    expect(healthcheck).toContain('http://127.0.0.1:8080/healthz');
  });

  it('starts the script that `npm start` runs, which `npm run build` produces', () => {
    const cmd = JSON.parse(instructions('CMD').at(-1)!) as string[];
    // A shell reads HEAP_GROWING_PERCENT and execs node, which stays PID 1 and gets the signals.
    expect(cmd.slice(0, 2)).toEqual(['sh', '-c']);
    const words = cmd[2]!.split(/\s+/);
    expect(words.slice(0, 2)).toEqual(['exec', 'node']);
    expect(words.at(-1)).toBe('serve');
    const script = words.find((arg) => arg.endsWith('.js'))!;
    expect(script).toBe('dist/src/cli/main.js');

    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(pkg.scripts.start!.split(/\s+/)).toContain(script);
    expect(pkg.scripts.build).toContain('tsconfig.build.json');
    // The image gives V8 the same old-generation growth as `npm start`, from the same variable with the same default.
    const flags = words.filter((arg) => arg.startsWith('--'));
    expect(flags).toEqual(['--heap-growing-percent=${HEAP_GROWING_PERCENT:-100}']);
    expect(pkg.scripts.start!.split(/\s+/)).toEqual(expect.arrayContaining(flags));
    // ... and the same malloc settings, which an environment variable of the same name overrides under `npm start`.
    const malloc = instructions('ENV').join(' ').match(/MALLOC_\w+=\S+/g) ?? [];
    expect(malloc).toEqual(['MALLOC_ARENA_MAX=2', 'MALLOC_MMAP_THRESHOLD_=131072']);
    for (const setting of malloc) {
      const [name, value] = setting.split('=');
      expect(pkg.scripts.start).toContain(`${name}=\${${name}:-${value}}`);
    }

    // tsc writes <outDir>/<path relative to rootDir>: src/cli/main.ts becomes dist/src/cli/main.js.
    const base = JSON.parse(read('tsconfig.json')) as { compilerOptions: { outDir: string; rootDir: string } };
    const build = JSON.parse(read('tsconfig.build.json')) as { include: string[]; compilerOptions?: { noEmit?: boolean } };
    expect(build.compilerOptions?.noEmit).toBe(false);
    expect(build.include).toContain('src');
    expect(base.compilerOptions.rootDir).toBe('.');
    const source = script.replace(new RegExp(`^${base.compilerOptions.outDir}/`), '').replace(/\.js$/, '.ts');
    expect(source).toBe('src/cli/main.ts');
    expect(existsSync(`${ROOT}${source}`)).toBe(true);
  });
});

describe('.dockerignore', () => {
  it('keeps local installs, builds, data and history out of the build context', () => {
    const entries = read('.dockerignore').split('\n').map((l) => l.trim());
    for (const entry of ['node_modules', 'dist', 'data', '.git']) expect(entries).toContain(entry);
  });
});
