import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { describe, expect, it } from 'vitest';

const run = promisify(execFile);

// V8 flags hold for the whole process, and the counts of collections depend
// on what else the process allocated, so a fresh Node.js process runs the
// built module.
const BUILT_MODULE = fileURLToPath(new URL('../../dist/src/fuse/free-memory.js', import.meta.url));

/**
 * Counts major collections while 1 GiB of 64 KiB buffers (the size of a
 * socket read) is allocated and dropped, before and after the takeover, and
 * for one call of the returned function.
 */
const SCRIPT = `
import { PerformanceObserver, constants } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

const { takeOverBufferCollection } = await import(process.argv[1]);

let major = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if (entry.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major += 1;
  }
}).observe({ entryTypes: ['gc'] });

async function countMajor(work) {
  major = 0;
  work();
  // The observer receives its entries after the work returns.
  await sleep(100);
  return major;
}

function churn() {
  const retained = [];
  for (let index = 0; index < 16384; index += 1) {
    const buffer = Buffer.allocUnsafeSlow(64 * 1024);
    buffer[0] = index & 0xff;
    if (index % 64 === 0) retained.push(buffer);
  }
  return retained.length;
}

await countMajor(churn);
const before = await countMajor(churn);
const collect = takeOverBufferCollection({ warn: (...args) => console.error(...args), debug: () => {} });
const after = await countMajor(churn);
const forced = typeof collect === 'function' ? await countMajor(collect) : -1;
console.log(JSON.stringify({ before, after, forced }));
`;

describe('takeOverBufferCollection', () => {
  it('replaces collections per 64 MiB', async () => {
    const { stdout } = await run(process.execPath, ['--input-type=module', '--eval', SCRIPT, BUILT_MODULE]);
    const counts = JSON.parse(stdout) as { before: number; after: number; forced: number };

    // Runs on a 2-core VM: 4 to 13 major collections before, 0 after.
    expect(counts.before).toBeGreaterThanOrEqual(3);
    expect(counts.after).toBeLessThanOrEqual(1);
    expect(counts.forced).toBe(1);
  });
});
