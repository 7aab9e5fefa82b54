/**
 * Settings of one mounted filesystem, with defaults and validation.
 *
 * Every size is in bytes, every `...Seconds` value is handed to the kernel as
 * a cache timeout, and every `...Ms` value is a timeout of this process. The
 * CLI builds a `Partial<FilesystemConfig>` from its options and calls
 * `resolveFilesystemConfig`, which fills in the defaults and rejects values
 * that cannot work.
 */

import { tmpdir } from 'node:os';
import { join } from 'node:path';

const KiB = 1024;
const MiB = 1024 * KiB;

export interface FilesystemConfig {
  /** Key prefix that is mounted: '' for the whole bucket, or a prefix ending with '/'. */
  prefix: string;
  uid: number;
  gid: number;
  /** Permission bits of every file. */
  fileMode: number;
  /** Permission bits of every directory. */
  dirMode: number;
  readOnly: boolean;
  attrTimeoutSeconds: number;
  entryTimeoutSeconds: number;
  /**
   * How long the kernel may remember that a name does not exist.
   * NOTE: not applied yet, because `FilesystemOperations.lookup` has no reply
   * for a negative entry; this mount's own negative cache uses `metadataTtlMs`.
   */
  negativeTimeoutSeconds: number;
  /** Lifetime of cached object metadata, directory listings and negative lookups. */
  metadataTtlMs: number;
  /** Size of one cached block and of one readahead GET. */
  blockSize: number;
  /** Largest readahead window of one sequential reader. */
  maxReadahead: number;
  /** Ranged GETs that one file handle may have in flight at a time. */
  readConcurrency: number;
  /** First part size of a multipart upload; later parts grow so that the store's object size limit fits. */
  partSize: number;
  /** Part uploads that one open file may have in flight at a time. */
  uploadConcurrency: number;
  /** Directory for spill files of random writes; created when missing. */
  spillDirectory: string;
  /** Memory for cached blocks and upload buffers together. */
  memoryLimitBytes: number;
}

/**
 * Defaults, each with its reason.
 *
 * The spill directory depends on the process id, so that two daemons on one
 * node never share spill files, and is computed when the defaults are built.
 */
export function defaultFilesystemConfig(): FilesystemConfig {
  return {
    // The whole bucket, unless the operator mounts one prefix of it.
    prefix: '',
    // The daemon's own identity, so that files appear owned by the user the daemon runs as.
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    // Objects carry no POSIX permissions; these are the usual umask 022 results.
    fileMode: 0o644,
    dirMode: 0o755,
    readOnly: false,
    // One second keeps `ls -l` and `stat` storms off the network while other
    // writers' changes still show up quickly.
    attrTimeoutSeconds: 1,
    entryTimeoutSeconds: 1,
    negativeTimeoutSeconds: 1,
    // Cached metadata lets a lookup, getattr and open in quick succession cost
    // one round trip; five seconds bounds how long a foreign change stays unseen.
    metadataTtlMs: 5000,
    // 8 MiB ranged GETs reach full throughput on S3 and GCS (request latency
    // is a small share of the transfer time) without wasting much on short reads.
    blockSize: 8 * MiB,
    // Eight blocks in flight keep a single sequential reader near network speed.
    maxReadahead: 64 * MiB,
    readConcurrency: 8,
    // 8 MiB parts are above S3's 5 MiB minimum and keep one writer's memory small.
    partSize: 8 * MiB,
    uploadConcurrency: 8,
    spillDirectory: join(tmpdir(), `bucketmount-spill-${process.pid}`),
    // Room for cached blocks of a few readers and in-flight parts of a few writers.
    memoryLimitBytes: 512 * MiB,
  };
}

/** Fills in defaults and validates; throws a RangeError that names the invalid setting. */
export function resolveFilesystemConfig(overrides: Partial<FilesystemConfig> = {}): FilesystemConfig {
  const config: FilesystemConfig = { ...defaultFilesystemConfig() };
  for (const [name, value] of Object.entries(overrides)) {
    if (value !== undefined) (config as unknown as Record<string, unknown>)[name] = value;
  }
  validateFilesystemConfig(config);
  return config;
}

export function validateFilesystemConfig(config: FilesystemConfig): void {
  if (config.prefix !== '' && (!config.prefix.endsWith('/') || config.prefix.startsWith('/') || config.prefix.includes('//'))) {
    throw new RangeError(`invalid prefix ${JSON.stringify(config.prefix)}: expected '' or a key prefix such as 'dir/' that ends with one '/' and does not start with '/'`);
  }

  for (const name of ['uid', 'gid'] as const) {
    requireInteger(name, config[name], 0);
  }
  for (const name of ['fileMode', 'dirMode'] as const) {
    if (!Number.isInteger(config[name]) || config[name] < 0 || config[name] > 0o7777) {
      throw new RangeError(`invalid ${name} ${String(config[name])}: expected permission bits from 0 to 0o7777`);
    }
  }
  for (const name of ['attrTimeoutSeconds', 'entryTimeoutSeconds', 'negativeTimeoutSeconds', 'metadataTtlMs'] as const) {
    if (!Number.isFinite(config[name]) || config[name] < 0) {
      throw new RangeError(`invalid ${name} ${String(config[name])}: expected a number >= 0`);
    }
  }

  requireInteger('blockSize', config.blockSize, 4 * KiB);
  requireInteger('maxReadahead', config.maxReadahead, config.blockSize);
  requireInteger('readConcurrency', config.readConcurrency, 1);
  requireInteger('partSize', config.partSize, 1);
  requireInteger('uploadConcurrency', config.uploadConcurrency, 1);
  requireInteger('memoryLimitBytes', config.memoryLimitBytes, 2 * config.blockSize);

  if (config.spillDirectory === '') {
    throw new RangeError('invalid spillDirectory "": expected a directory path for spill files');
  }
}

function requireInteger(name: string, value: number, minimum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new RangeError(`invalid ${name} ${String(value)}: expected an integer >= ${minimum}`);
  }
}
