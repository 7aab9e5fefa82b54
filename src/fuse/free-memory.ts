/**
 * Keeps freed buffers from growing the daemon: a pacer of garbage
 * collections for buffer memory, and a releaser of the memory that the C
 * library keeps after buffers were freed, when the process grows past a
 * target.
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

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import type { Logger } from '../observability/logger.js';

/** How often the resident set is compared with the target. */
export const RELEASE_CHECK_INTERVAL_MS = 1000;

/**
 * A check that runs on a timer from `start` until `stop`. The timer is
 * unreferenced, so that it does not keep a daemon that is shutting down alive.
 */
abstract class PeriodicCheck {
  private timer: NodeJS.Timeout | undefined;

  protected constructor(private readonly intervalMs: number) {}

  /** Runs the check once. */
  abstract check(): void;

  /** Starts checking every interval; a second call does nothing. Returns whether this call started it. */
  protected startTimer(): boolean {
    if (this.timer !== undefined) return false;

    this.timer = setInterval(() => this.check(), this.intervalMs).unref();
    return true;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

export interface FreeMemoryReleaserOptions {
  /** Gives free heap pages back; returns true when it released any. */
  release: () => boolean;
  /** Resident set size above which free pages are given back. */
  targetBytes: number;
  logger: Logger;
  /** Resident set size in bytes; process.memoryUsage.rss by default. */
  residentBytes?: () => number;
}

export class FreeMemoryReleaser extends PeriodicCheck {
  private readonly options: FreeMemoryReleaserOptions;
  private readonly residentBytes: () => number;
  private releases = 0;

  constructor(options: FreeMemoryReleaserOptions) {
    super(RELEASE_CHECK_INTERVAL_MS);
    this.options = options;
    this.residentBytes = options.residentBytes ?? (() => process.memoryUsage.rss());
  }

  /** How many checks found the resident set above the target and released memory. */
  get releaseCount(): number {
    return this.releases;
  }

  start(): void {
    if (!this.startTimer()) return;
    this.options.logger.debug({ targetBytes: this.options.targetBytes }, 'returning free heap memory to the system above this resident size');
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

/** How often the pacer compares the memory of buffers with its threshold. */
export const COLLECTION_CHECK_INTERVAL_MS = 100;

export interface GarbageCollectionPacerOptions {
  /** Runs a full garbage collection. */
  collect: () => void;
  /** Growth of buffer memory since the last collection that starts the next one. */
  thresholdBytes: number;
  logger: Logger;
  /** Memory of ArrayBuffers and Buffers in bytes; process.memoryUsage().arrayBuffers by default. */
  bufferBytes?: () => number;
}

/**
 * Starts a full garbage collection whenever buffer memory has grown by a
 * threshold since the last one.
 *
 * By default V8 runs a major collection after about every 64 MiB of new
 * buffer memory, whatever the budget, and a mount that streams from the
 * network frees a buffer of up to 64 KiB per socket read. After
 * `takeOverBufferCollection`, V8 counts buffer memory against its heap limit
 * instead, and young-generation collections free most of those buffers. This
 * pacer bounds what they leave behind.
 */
export class GarbageCollectionPacer extends PeriodicCheck {
  private readonly options: GarbageCollectionPacerOptions;
  private readonly bufferBytes: () => number;
  private baseline: number;
  private collections = 0;

  constructor(options: GarbageCollectionPacerOptions) {
    super(COLLECTION_CHECK_INTERVAL_MS);
    this.options = options;
    this.bufferBytes = options.bufferBytes ?? (() => process.memoryUsage().arrayBuffers);
    this.baseline = this.bufferBytes();
  }

  /** How many collections the pacer started. */
  get collectionCount(): number {
    return this.collections;
  }

  start(): void {
    if (!this.startTimer()) return;
    this.options.logger.debug({ thresholdBytes: this.options.thresholdBytes }, 'collecting garbage whenever buffer memory grows by this much');
  }

  /** Runs a collection if buffer memory grew by the threshold since the last one. */
  check(): void {
    const before = this.bufferBytes();

    // Collections that V8 ran on its own lower the buffer memory, and the
    // next threshold counts from there.
    if (before < this.baseline) this.baseline = before;
    if (before < this.baseline + this.options.thresholdBytes) return;

    const started = performance.now();
    this.options.collect();
    this.collections += 1;

    // Buffers still in use (cached blocks) stay, so the next threshold
    // counts from what the collection left.
    this.baseline = this.bufferBytes();
    this.options.logger.debug(
      { bufferBytesBefore: before, bufferBytesAfter: this.baseline, milliseconds: Math.round((performance.now() - started) * 100) / 100 },
      'collected garbage after buffer memory grew',
    );
  }
}

/**
 * Makes V8 count buffer memory against its heap limit instead of collecting
 * after every 64 MiB of it, and returns a function that runs a full
 * collection, or undefined when V8 rejects either flag.
 *
 * Reading 1 GiB cold from MinIO took 2.3 to 2.7 s of daemon CPU with the
 * flag and 3.3 to 3.9 s without (2-core VM, three runs each).
 */
export function takeOverBufferCollection(logger: Logger): (() => void) | undefined {
  try {
    setFlagsFromString('--external-memory-accounted-in-global-limit');

    // V8 defines gc() only in contexts made after the flag is set.
    setFlagsFromString('--expose-gc');
    const collect: unknown = runInNewContext('gc');
    if (typeof collect !== 'function') throw new Error('the gc function is missing after --expose-gc');
    return collect as () => void;
  } catch (error) {
    logger.warn({ err: error }, 'V8 did not accept the garbage collection flags; it collects after every 64 MiB of buffers');
    return undefined;
  }
}
