/**
 * Prometheus metrics of one mount, declared once: every name, unit, label set
 * and bucket layout the daemon exports is in this file.
 *
 * Each mount owns a `MountMetrics` with its own `Registry`, and nothing is
 * registered in prom-client's global registry, so that one process can serve
 * several mounts without their counters mixing. Process-wide metrics (memory,
 * event loop lag, garbage collection) live in a separate registry that
 * `createProcessRegistry` makes once per process.
 *
 * Names follow the Prometheus conventions: a `bucketmount_` prefix, the base
 * unit as suffix (`_seconds`, `_bytes`) and `_total` on counters. Label values
 * come from closed sets, so a series count never depends on file names, keys
 * or request ids:
 * - `operation` of FUSE metrics: the FUSE request kinds that the adapter
 *   serves (`NativeOperation`);
 * - `errno`: one of `REPORTED_ERRNO_NAMES`, or `other`;
 * - `operation` of store metrics: the `ObjectStore` methods;
 * - `code`: `ok` or a `StoreErrorCode`; `status_class`: `2xx` to `5xx`, or
 *   `none` when no HTTP response arrived (network failure, abort).
 *
 * Values that other objects already count (block cache statistics, open
 * writers, credential state) are read when Prometheus scrapes, through
 * `collect()` callbacks, so the hot paths gain no extra work.
 */

import type { Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { CredentialState } from '../credentials/types.js';
import type { NativeOperation } from '../fuse/native.js';
import type { StoreErrorCode } from '../store/errors.js';
import type { ObjectStore } from '../store/types.js';

/**
 * Loads prom-client on the first use. Loading it takes about 15 to 40 ms
 * (measured with Node 24.21 on a shared 2-core VM, an estimate). A mount
 * without --metrics-port never loads it. One with it loads it when the first
 * `MountMetrics` or process registry is created. prom-client is a
 * CommonJS package, so `require` loads it synchronously and the constructors
 * stay synchronous.
 *
 * The require function is created on the first call too, not when this module
 * loads: the daemon's start-up snapshot contains this module already loaded, and
 * `node:module` must not be loaded into a snapshot.
 */
let requireModule: NodeJS.Require | undefined;
export function promClient(): typeof import('prom-client') {
  requireModule ??= process.getBuiltinModule('node:module').createRequire(import.meta.url);
  return requireModule('prom-client') as typeof import('prom-client');
}

/** Errno names that get their own series; any other errno is counted as `other`. */
export const REPORTED_ERRNO_NAMES = [
  'ENOENT',
  'EACCES',
  'EPERM',
  'EIO',
  'ESTALE',
  'EAGAIN',
  'EINTR',
  'EINVAL',
  'EEXIST',
  'ENOTEMPTY',
  'EISDIR',
  'ENOTDIR',
  'EROFS',
  'EBADF',
  'ENAMETOOLONG',
  'ENOSPC',
  'EXDEV',
  'ETIMEDOUT',
  'ENOSYS',
  'EOPNOTSUPP',
] as const;

/** The `ObjectStore` methods, the values of the store metrics' `operation` label. */
export type StoreOperation = Exclude<keyof ObjectStore, 'kind' | 'bucket' | 'limits'>;

export type StoreOutcomeCode = 'ok' | StoreErrorCode | 'unknown';
export type StatusClass = '2xx' | '3xx' | '4xx' | '5xx' | 'none';

/**
 * Latency buckets of FUSE operations, in seconds. Answers from the metadata
 * or block cache take microseconds, one object store round trip takes 10 to
 * 100 ms, and a close that completes an upload can take seconds; the last
 * bucket is the default request timeout (120 s).
 */
const FUSE_LATENCY_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];

/**
 * Latency buckets of object store requests, in seconds: from a HEAD on a
 * nearby endpoint (a few ms) to a part upload on a slow link (tens of
 * seconds). Retries inside the SDK are part of one request.
 */
const STORE_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** What the metrics read from the filesystem at scrape time; a subset of `BucketFilesystem.statistics()`. */
export interface FilesystemStatistics {
  inodes: number;
  openHandles: number;
  openWriters: number;
  uploadBufferBytes: number;
  blockCache: { hits: number; misses: number; evictions?: number; cachedBytes: number; cachedBlocks: number };
}


/** Receives the outcome of each store request; implemented by `MountMetrics`, consumed by `InstrumentedStore`. */
export interface StoreMetricsRecorder {
  storeRequestStarted(operation: StoreOperation): void;
  storeRequestFinished(operation: StoreOperation, code: StoreOutcomeCode, statusClass: StatusClass, seconds: number): void;
  storeBytesTransferred(direction: 'download' | 'upload', bytes: number): void;
  multipartUploadsChanged(delta: number): void;
  storeRetry(): void;
}

/** Returns the errno label value of a positive errno. */
export function errnoLabel(errno: number, errnoName: (errno: number) => string): string {
  const name = errnoName(errno);
  return (REPORTED_ERRNO_NAMES as readonly string[]).includes(name) ? name : 'other';
}

/** Returns the status class label of an HTTP status, or `none` without one. */
export function statusClassOf(httpStatus: number | undefined): StatusClass {
  if (httpStatus === undefined || httpStatus < 200 || httpStatus >= 600) return 'none';
  return `${Math.floor(httpStatus / 100)}xx` as StatusClass;
}

/**
 * Sets a counter to a total that another object keeps. prom-client counters
 * only go up, so the counter is reset and increased by the new total; a
 * total that went down (a restarted source) shows as a counter reset, as
 * Prometheus expects.
 */
function setCounter(counter: Counter, total: number): void {
  counter.reset();
  counter.inc(Math.max(0, total));
}

export class MountMetrics implements StoreMetricsRecorder {
  readonly registry: Registry;

  private readonly fuseDuration: Histogram<'operation'>;
  private readonly fuseErrors: Counter<'operation' | 'errno'>;
  private readonly readBytes: Counter;
  private readonly writtenBytes: Counter;
  private readonly storeDuration: Histogram<'operation' | 'code' | 'status_class'>;
  private readonly storeInFlight: Gauge<'operation'>;
  private readonly storeBytes: Counter<'direction'>;
  private readonly storeRetries: Counter;
  private readonly multipartUploads: Gauge;

  constructor() {
    const { Counter, Gauge, Histogram, Registry } = promClient();
    this.registry = new Registry();
    const registers = [this.registry];

    // FUSE operations, counted where the adapter replies.
    this.fuseDuration = new Histogram({
      name: 'bucketmount_fuse_operation_duration_seconds',
      help: 'Time from receiving a FUSE request to replying, by operation; the _count series counts operations',
      labelNames: ['operation'],
      buckets: FUSE_LATENCY_BUCKETS,
      registers,
    });
    this.fuseErrors = new Counter({
      name: 'bucketmount_fuse_operation_errors_total',
      help: 'FUSE requests answered with an error, by operation and errno name (uncommon errno values are counted as "other")',
      labelNames: ['operation', 'errno'],
      registers,
    });
    this.readBytes = new Counter({ name: 'bucketmount_read_bytes_total', help: 'Bytes returned to programs by read requests', registers });
    this.writtenBytes = new Counter({ name: 'bucketmount_written_bytes_total', help: 'Bytes accepted from programs by write requests', registers });

    // Object store requests, counted by InstrumentedStore.
    this.storeDuration = new Histogram({
      name: 'bucketmount_store_request_duration_seconds',
      help: 'Duration of object store calls, SDK retries included, by operation, outcome code and HTTP status class; the _count series counts requests',
      labelNames: ['operation', 'code', 'status_class'],
      buckets: STORE_LATENCY_BUCKETS,
      registers,
    });
    this.storeInFlight = new Gauge({
      name: 'bucketmount_store_requests_in_flight',
      help: 'Object store calls started and not finished, by operation',
      labelNames: ['operation'],
      registers,
    });
    this.storeBytes = new Counter({
      name: 'bucketmount_store_transferred_bytes_total',
      help: 'Object bytes received by GETs (download) and sent by PUTs and part uploads (upload)',
      labelNames: ['direction'],
      registers,
    });
    this.storeRetries = new Counter({
      name: 'bucketmount_store_retries_total',
      help: 'Object store requests repeated after a throttling, server or network error, or after rejected credentials',
      registers,
    });
    this.multipartUploads = new Gauge({
      name: 'bucketmount_multipart_uploads_in_progress',
      help: 'Multipart uploads created and neither completed nor aborted yet',
      registers,
    });
  }

  // ---------------------------------------------------------------------------
  // FUSE adapter hooks

  /** Records one answered FUSE request; `errno` is 0 for success. */
  operationDone(operation: NativeOperation, errno: number, durationMs: number, errnoName: (errno: number) => string): void {
    this.fuseDuration.observe({ operation }, durationMs / 1000);
    if (errno !== 0) this.fuseErrors.inc({ operation, errno: errnoLabel(errno, errnoName) });
  }

  bytesRead(bytes: number): void {
    this.readBytes.inc(bytes);
  }

  bytesWritten(bytes: number): void {
    this.writtenBytes.inc(bytes);
  }

  // ---------------------------------------------------------------------------
  // Store hooks

  storeRequestStarted(operation: StoreOperation): void {
    this.storeInFlight.inc({ operation });
  }

  storeRequestFinished(operation: StoreOperation, code: StoreOutcomeCode, statusClass: StatusClass, seconds: number): void {
    this.storeInFlight.dec({ operation });
    this.storeDuration.observe({ operation, code, status_class: statusClass }, seconds);
  }

  storeBytesTransferred(direction: 'download' | 'upload', bytes: number): void {
    this.storeBytes.inc({ direction }, bytes);
  }

  multipartUploadsChanged(delta: number): void {
    this.multipartUploads.inc(delta);
  }

  storeRetry(): void {
    this.storeRetries.inc();
  }

  // ---------------------------------------------------------------------------
  // Values read at scrape time

  /**
   * Registers the metrics read from the filesystem at scrape time. Call once,
   * when the filesystem exists; `memoryBudgetBytes` is its memory budget for
   * cached blocks and upload buffers.
   */
  observeFilesystem(statistics: () => FilesystemStatistics, memoryBudgetBytes: number): void {
    const { Counter, Gauge } = promClient();
    const registers = [this.registry];

    const budget = new Gauge({ name: 'bucketmount_memory_budget_bytes', help: 'Memory budget of the mount for cached blocks and upload buffers', registers });
    budget.set(memoryBudgetBytes);

    new Counter({
      name: 'bucketmount_block_cache_hits_total',
      help: 'Block reads answered from the block cache',
      registers,
      collect() {
        setCounter(this, statistics().blockCache.hits);
      },
    });
    new Counter({
      name: 'bucketmount_block_cache_misses_total',
      help: 'Block reads that fetched bytes from the object store',
      registers,
      collect() {
        setCounter(this, statistics().blockCache.misses);
      },
    });
    new Counter({
      name: 'bucketmount_block_cache_evictions_total',
      help: 'Blocks dropped from the block cache to stay within its size',
      registers,
      collect() {
        setCounter(this, statistics().blockCache.evictions ?? 0);
      },
    });
    new Gauge({
      name: 'bucketmount_block_cache_bytes',
      help: 'Bytes held by the block cache',
      registers,
      collect() {
        this.set(statistics().blockCache.cachedBytes);
      },
    });
    new Gauge({
      name: 'bucketmount_upload_buffer_bytes',
      help: 'Bytes of upload parts buffered or in flight',
      registers,
      collect() {
        this.set(statistics().uploadBufferBytes);
      },
    });
    new Gauge({
      name: 'bucketmount_files_open_for_writing',
      help: 'Files with at least one handle open for writing, each with an upload pending until its last close',
      registers,
      collect() {
        this.set(statistics().openWriters);
      },
    });
    new Gauge({
      name: 'bucketmount_open_handles',
      help: 'Open file and directory handles',
      registers,
      collect() {
        this.set(statistics().openHandles);
      },
    });
    new Gauge({
      name: 'bucketmount_inodes',
      help: 'Inodes the daemon keeps numbers for',
      registers,
      collect() {
        this.set(statistics().inodes);
      },
    });
  }

  /** Registers the metrics read from the credential source at scrape time. Call once. */
  observeCredentials(state: () => CredentialState): void {
    const { Counter, Gauge } = promClient();
    const registers = [this.registry];

    new Gauge({
      name: 'bucketmount_credentials_expiry_timestamp_seconds',
      help: 'Unix time at which the credentials held now expire; 0 while none are held',
      registers,
      collect() {
        const expiration = state().expiration;
        this.set(expiration === undefined ? 0 : expiration.getTime() / 1000);
      },
    });
    new Counter({
      name: 'bucketmount_credential_renewals_total',
      help: 'Successful credential exchanges, the first one included',
      registers,
      collect() {
        setCounter(this, state().totalRenewals);
      },
    });
    new Counter({
      name: 'bucketmount_credential_renewal_failures_total',
      help: 'Failed credential exchanges',
      registers,
      collect() {
        setCounter(this, state().totalFailures);
      },
    });
  }
}

/** Creates the registry of process-wide metrics (resident memory, heap, event loop lag, GC) with prom-client's default collectors. */
export function createProcessRegistry(): Registry {
  const { collectDefaultMetrics, Registry } = promClient();
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'bucketmount_' });
  return registry;
}
