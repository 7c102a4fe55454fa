import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** README.md and every Markdown file under docs/. */
function markdownFiles(): string[] {
  const files = [join(ROOT, 'README.md')];
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.md')) files.push(path);
    }
  };
  walk(join(ROOT, 'docs'));
  return files;
}

/**
 * The text outside fenced code blocks, line by line (line numbers kept), without inline code spans unless
 * `keepCode` (a heading's code span is part of its anchor).
 */
function proseLines(markdown: string, keepCode = false): string[] {
  let fence: string | undefined;
  return markdown.split('\n').map((line) => {
    const opening = /^ {0,3}(`{3,}|~{3,})/.exec(line);
    if (fence !== undefined) {
      if (opening && opening[1]![0] === fence[0] && opening[1]!.length >= fence.length && line.trim() === opening[1]) {
        fence = undefined;
      }
      return '';
    }
    if (opening) {
      fence = opening[1]!;
      return '';
    }
    return keepCode ? line : line.replace(/(`+)[^`]*?\1/g, '');
  });
}

/** GitHub's heading anchor: lowercase, punctuation removed (letters, digits, spaces, `-`, `_` kept), spaces to `-`. */
export function githubSlug(heading: string): string {
  const text = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // a link or image in a heading keeps its text
    .replace(/<[^>]+>/g, '') // inline HTML
    .replace(/[*~`]/g, ''); // emphasis and code marks (an underscore stays: GitHub keeps it in snake_case words)
  return text
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor a Markdown file's headings define, with GitHub's `-1`, `-2`… suffixes for repeated headings. */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const line of proseLines(markdown, true)) {
    const heading = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const slug = githubSlug(heading[1]!.replace(/`/g, ''));
    const count = seen.get(slug) ?? 0;
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
    seen.set(slug, count + 1);
  }
  for (const match of markdown.matchAll(/<a\s+(?:name|id)="([^"]+)"/g)) anchors.add(match[1]!);
  return anchors;
}

export interface LinkProblem {
  file: string;
  line: number;
  target: string;
  problem: string;
}

/** The relative links of one Markdown file that do not resolve: a missing file, or an anchor no heading defines. */
export function brokenLinks(file: string, markdown: string, read: (path: string) => string | undefined): LinkProblem[] {
  const problems: LinkProblem[] = [];
  const lines = proseLines(markdown);
  const targets: { line: number; target: string }[] = [];
  lines.forEach((line, index) => {
    // Inline links and images: [text](target) or [text](<target> "title").
    for (const match of line.matchAll(/!?\[(?:[^\]\\]|\\.)*\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)/g)) {
      targets.push({ line: index + 1, target: match[1]!.replace(/^<|>$/g, '') });
    }
    // Reference definitions: [label]: target
    const definition = /^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)/.exec(line);
    if (definition) targets.push({ line: index + 1, target: definition[1]!.replace(/^<|>$/g, '') });
  });
  for (const { line, target } of targets) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue; // absolute URL, mailto:, …
    const hash = target.indexOf('#');
    const pathPart = decodeURIComponent(hash === -1 ? target : target.slice(0, hash));
    const anchor = hash === -1 ? undefined : decodeURIComponent(target.slice(hash + 1));
    const resolved = pathPart === '' ? file : resolve(dirname(file), pathPart.split('?')[0]!);
    const rel = relative(ROOT, resolved);
    if (pathPart !== '' && (rel.startsWith('..') || !existsSync(resolved))) {
      problems.push({ file: relative(ROOT, file), line, target, problem: `no file ${rel}` });
      continue;
    }
    if (anchor === undefined || anchor === '') continue;
    if (statSync(resolved).isDirectory() || !resolved.endsWith('.md')) {
      problems.push({ file: relative(ROOT, file), line, target, problem: `an anchor into ${rel}, which is no Markdown file` });
      continue;
    }
    const text = read(resolved);
    if (text === undefined || !anchorsOf(text).has(anchor)) {
      problems.push({ file: relative(ROOT, file), line, target, problem: `no heading in ${rel} has the anchor #${anchor}` });
    }
  }
  return problems;
}

const readText = (path: string): string | undefined => (existsSync(path) ? readFileSync(path, 'utf8') : undefined);

describe('documentation links', () => {
  const files = markdownFiles();

  it('covers README.md and the documents under docs/', () => {
    const names = files.map((f) => relative(ROOT, f));
    expect(names).toContain('README.md');
    expect(names).toContain(join('docs', 'wire-formats.md'));
  });

  it.each(files.map((f) => [relative(ROOT, f), f]))('every relative link and anchor in %s resolves', (_name, file) => {
    expect(brokenLinks(file, readFileSync(file, 'utf8'), readText)).toEqual([]);
  });

  it('makes anchors by GitHub’s rule', () => {
    expect(githubSlug('Verifying tokens at a resource server (agent-sts/verifier)')).toBe(
      'verifying-tokens-at-a-resource-server-agent-stsverifier',
    );
    expect(githubSlug('Shared Signals (SSF transmitter)')).toBe('shared-signals-ssf-transmitter');
    expect(githubSlug('6. Transaction Tokens: request, claims, replacement')).toBe(
      '6-transaction-tokens-request-claims-replacement',
    );
    expect(githubSlug('WIT and WPT (draft-ietf-wimse-*)')).toBe('wit-and-wpt-draft-ietf-wimse-');
    expect(githubSlug('token_type and `N_A`'.replace(/`/g, ''))).toBe('token_type-and-n_a');
    expect([...anchorsOf('# Errors\n\n## Errors\n\n```\n# not a heading\n```\n')]).toEqual(['errors', 'errors-1']);
  });

  it('reports a missing file, a missing anchor and an anchor into a missing heading of another file', () => {
    const readme = join(ROOT, 'README.md');
    const sample = [
      'See [the profile](docs/wire-formats.md), [nothing](docs/no-such-file.md) and [a typo](docs/wire-formats.md#no-such-heading).',
      'Here: [a section](#quick-start), [gone](#no-such-section), `[in code](docs/missing.md)`.',
      '```',
      '[in a fence](docs/missing.md)',
      '```',
      '[ref]: docs/also-missing.md',
      '[external](https://example.com/x.md#y)',
    ].join('\n');
    const problems = brokenLinks(readme, sample, readText).map((p) => `${p.line} ${p.target}`);
    expect(problems).toEqual([
      '1 docs/no-such-file.md',
      '1 docs/wire-formats.md#no-such-heading',
      '2 #no-such-section',
      '6 docs/also-missing.md',
    ]);
  });
});
