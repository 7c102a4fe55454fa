import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

describe('LICENSE', () => {
  it('is the Apache License 2.0 text that package.json names, all nine sections and the appendix', () => {
    expect((JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { license: string }).license).toBe('Apache-2.0');
    const text = readFileSync(`${ROOT}LICENSE`, 'utf8');
    expect(text).toMatch(/^\s*Apache License\n\s*Version 2\.0, January 2004\n\s*http:\/\/www\.apache\.org\/licenses\/\n/);
    const sections = ['Definitions', 'Grant of Copyright License', 'Grant of Patent License', 'Redistribution', 'Submission of Contributions',
      'Trademarks', 'Disclaimer of Warranty', 'Limitation of Liability', 'Accepting Warranty or Additional Liability'];
    sections.forEach((title, i) => expect(text).toContain(`   ${i + 1}. ${title}.`));
    expect(text).toContain('END OF TERMS AND CONDITIONS');
    expect(text).toContain('http://www.apache.org/licenses/LICENSE-2.0');
    expect(text.split('\n').length).toBeGreaterThanOrEqual(200);
  });
});
