import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { COLLECTION_CHECK_INTERVAL_MS, FreeMemoryReleaser, GarbageCollectionPacer, RELEASE_CHECK_INTERVAL_MS } from './free-memory.js';
import { loadNativeAddon } from './native.js';

const MiB = 1024 * 1024;
const silent = pino({ level: 'silent' });

afterEach(() => {
  vi.useRealTimers();
});

describe('FreeMemoryReleaser', () => {
  it('releases only above the target', () => {
    let resident = 300 * MiB;
    const release = vi.fn(() => {
      resident -= 50 * MiB;
      return true;
    });
    const releaser = new FreeMemoryReleaser({ release, targetBytes: 200 * MiB, logger: silent, residentBytes: () => resident });

    releaser.check();
    expect(release).toHaveBeenCalledTimes(1);
    expect(resident).toBe(250 * MiB);

    releaser.check();
    expect(release).toHaveBeenCalledTimes(2);

    releaser.check();
    releaser.check();
    expect(release).toHaveBeenCalledTimes(2);
    expect(releaser.releaseCount).toBe(2);
  });

  it('checks every interval until stopped', () => {
    vi.useFakeTimers();
    const release = vi.fn(() => false);
    const releaser = new FreeMemoryReleaser({ release, targetBytes: 100 * MiB, logger: silent, residentBytes: () => 101 * MiB });

    releaser.start();
    releaser.start();
    vi.advanceTimersByTime(3 * RELEASE_CHECK_INTERVAL_MS);
    expect(release).toHaveBeenCalledTimes(3);
    // A release that found nothing to give back is not counted.
    expect(releaser.releaseCount).toBe(0);

    releaser.stop();
    vi.advanceTimersByTime(3 * RELEASE_CHECK_INTERVAL_MS);
    expect(release).toHaveBeenCalledTimes(3);
  });
});

describe('GarbageCollectionPacer', () => {
  it('collects after the threshold of growth', () => {
    let buffers = 100 * MiB;
    const collect = vi.fn(() => {
      buffers -= 40 * MiB;
    });
    const pacer = new GarbageCollectionPacer({ collect, thresholdBytes: 64 * MiB, logger: silent, bufferBytes: () => buffers });

    buffers += 63 * MiB;
    pacer.check();
    expect(collect).not.toHaveBeenCalled();

    buffers += 1 * MiB;
    pacer.check();
    expect(collect).toHaveBeenCalledTimes(1);
    expect(buffers).toBe(124 * MiB);

    // The next threshold counts from what the collection left.
    buffers += 63 * MiB;
    pacer.check();
    expect(collect).toHaveBeenCalledTimes(1);
    buffers += 1 * MiB;
    pacer.check();
    expect(collect).toHaveBeenCalledTimes(2);
    expect(pacer.collectionCount).toBe(2);
  });

  it('counts from a lower level after V8 collected', () => {
    let buffers = 200 * MiB;
    const collect = vi.fn();
    const pacer = new GarbageCollectionPacer({ collect, thresholdBytes: 64 * MiB, logger: silent, bufferBytes: () => buffers });

    // A collection of V8's own leaves 50 MiB, so 64 MiB more reaches the threshold.
    buffers = 50 * MiB;
    pacer.check();
    buffers = 114 * MiB;
    pacer.check();
    expect(collect).toHaveBeenCalledTimes(1);
  });

  it('checks every interval until stopped', () => {
    vi.useFakeTimers();
    let buffers = 0;
    const collect = vi.fn();
    const pacer = new GarbageCollectionPacer({ collect, thresholdBytes: 10 * MiB, logger: silent, bufferBytes: () => buffers });

    pacer.start();
    for (let tick = 0; tick < 3; tick += 1) {
      buffers += 10 * MiB;
      vi.advanceTimersByTime(COLLECTION_CHECK_INTERVAL_MS);
    }
    expect(collect).toHaveBeenCalledTimes(3);

    pacer.stop();
    buffers += 10 * MiB;
    vi.advanceTimersByTime(COLLECTION_CHECK_INTERVAL_MS);
    expect(collect).toHaveBeenCalledTimes(3);
  });
});

describe('native releaseFreeMemory', () => {
  // Heap-sized allocations (64 KiB, below the mmap threshold) of which every
  // other one is freed leave holes that glibc keeps resident until it trims.
  it('gives freed heap pages back', () => {
    const addon = loadNativeAddon();
    const count = 4096;
    const retained: Buffer[] = [];
    let freed: Buffer[] | undefined = [];
    for (let index = 0; index < count; index += 1) {
      const buffer = Buffer.allocUnsafeSlow(64 * 1024).fill(index & 0xff);
      if (index % 2 === 0) retained.push(buffer);
      else freed.push(buffer);
    }
    expect(retained.length).toBe(count / 2);

    freed = undefined;
    collectGarbage();
    addon.releaseFreeMemory();
    const settled = process.memoryUsage.rss();

    // Refill the holes and free them again, then measure what a release gives back.
    freed = Array.from({ length: count / 2 }, (_unused, index) => Buffer.allocUnsafeSlow(64 * 1024).fill(index & 0xff));
    expect(freed.length).toBe(count / 2);
    freed = undefined;
    collectGarbage();
    const before = process.memoryUsage.rss();
    const released = addon.releaseFreeMemory();
    const after = process.memoryUsage.rss();

    expect(released).toBe(true);
    expect(before - settled).toBeGreaterThan(64 * MiB);
    expect(before - after).toBeGreaterThan(64 * MiB);
  });
});

/** Frees the backing memory of unreachable buffers. */
function collectGarbage(): void {
  // V8 creates the gc function for contexts made after the flag is set.
  setFlagsFromString('--expose-gc');
  const collect = runInNewContext('gc') as () => void;

  // V8 frees the backing stores of collected buffers on a background thread
  // after the collection returns, and finishes that work before it starts
  // the next collection, so only after the second call are they all freed.
  collect();
  collect();
}
