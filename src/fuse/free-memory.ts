/**
 * Returns memory that the C library keeps after buffers were freed, when the
 * process grows past a target.
 *
 * Socket reads (64 KiB each) and FUSE write requests are smaller than the
 * large-allocation threshold, so glibc carves them from its heaps. Their
 * pages stay resident after free() unless they lie at the top of a heap. A
 * mount that streams gigabytes leaves those heaps fragmented: after writing
 * and reading 1 GiB twice on GCS under --memory-limit 256MiB, 344 MiB were
 * resident, and malloc_trim(0) brought that down to 247 MiB.
 *
 * Returning pages costs CPU, because the heap faults them in again when it
 * reuses them. Trimming after every major garbage collection, whatever the
 * size, took 91.8 s of CPU for a 10 GiB write and read on S3 against 85.3 s
 * without trimming (one run each). So the releaser trims only while the
 * resident set is above the target.
 */

import type { Logger } from '../observability/logger.js';

/** How often the resident set is compared with the target. */
export const RELEASE_CHECK_INTERVAL_MS = 1000;

export interface FreeMemoryReleaserOptions {
  /** Gives free heap pages back; returns true when it released any. */
  release: () => boolean;
  /** Resident set size above which free pages are given back. */
  targetBytes: number;
  logger: Logger;
  /** Resident set size in bytes; process.memoryUsage.rss by default. */
  residentBytes?: () => number;
}

export class FreeMemoryReleaser {
  private readonly options: FreeMemoryReleaserOptions;
  private readonly residentBytes: () => number;
  private timer: NodeJS.Timeout | undefined;
  private releases = 0;

  constructor(options: FreeMemoryReleaserOptions) {
    this.options = options;
    this.residentBytes = options.residentBytes ?? (() => process.memoryUsage.rss());
  }

  /** How many checks found the resident set above the target and released memory. */
  get releaseCount(): number {
    return this.releases;
  }

  start(): void {
    if (this.timer !== undefined) return;

    // The timer must not keep a daemon that is shutting down alive.
    this.timer = setInterval(() => this.check(), RELEASE_CHECK_INTERVAL_MS).unref();
    this.options.logger.debug({ targetBytes: this.options.targetBytes }, 'returning free heap memory to the system above this resident size');
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Releases free heap pages if the resident set is above the target. */
  check(): void {
    const before = this.residentBytes();
    if (before <= this.options.targetBytes) return;

    const started = performance.now();
    if (!this.options.release()) return;

    this.releases += 1;
    this.options.logger.debug(
      { residentBefore: before, residentAfter: this.residentBytes(), milliseconds: Math.round((performance.now() - started) * 100) / 100 },
      'returned free heap memory to the system',
    );
  }
}
