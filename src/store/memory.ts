/**
 * An in-memory object store that models S3 semantics closely enough to be the
 * reference in unit and property tests.
 *
 * What it models:
 * - listing in UTF-8 byte order (as S3 does, not JavaScript's UTF-16 order),
 *   pages of at most `maxKeys` entries where a common prefix counts as one
 *   entry, opaque continuation tokens, `startAfter`;
 * - a fresh version token for every write, even of identical bytes, so that a
 *   pinned read fails after any overwrite;
 * - ranged reads: the end is clamped to the object size, a start at or past
 *   the end of a non-empty object is rejected (HTTP 416 on S3);
 * - conditional writes (`ifNoneMatch`) and conditional copies;
 * - multipart uploads with the store limits: part numbers 1..maxParts, every
 *   part but the last at least `minPartSize`, parts uploaded in any order and
 *   completed with an ascending subset of them;
 * - a missing bucket (`bucketExists: false`) that rejects every request.
 *
 * Tests can also inspect it: `putRaw` writes without counting a request,
 * `snapshot()` copies the contents, and `counters()` reports requests per
 * operation and bytes moved, so that a test can assert "no HEAD per file"
 * or "only the requested range was fetched".
 *
 * All state changes happen synchronously inside one method call, so no
 * request observes another one half done.
 */

import { createHash, randomBytes } from 'node:crypto';

import {
  AbortedError,
  InvalidRequestError,
  NoSuchBucketError,
  NotFoundError,
  PreconditionFailedError,
  type StoreError,
} from './errors.js';
import { decodeListPosition, encodeListPosition, type ListPosition } from './list-position.js';
import { S3_LIMITS, S3_MAX_LIST_KEYS } from './limits.js';
import type {
  CompletedPart,
  CopyRequest,
  GetRequest,
  GetResult,
  ListPage,
  ListRequest,
  MultipartUploadInfo,
  ObjectInfo,
  ObjectStore,
  PutRequest,
  SignalOption,
  StoreLimits,
} from './types.js';

export const MEMORY_OPERATIONS = [
  'list',
  'head',
  'get',
  'put',
  'createMultipartUpload',
  'uploadPart',
  'completeMultipartUpload',
  'abortMultipartUpload',
  'listMultipartUploads',
  'copy',
  'delete',
  'deleteMany',
] as const;

export type MemoryOperation = (typeof MEMORY_OPERATIONS)[number];

export interface MemoryStoreCounters {
  /** Requests received per operation, including the ones that failed. */
  requests: Record<MemoryOperation, number>;
  /** Body bytes returned by `get`. */
  bytesFetched: number;
  /** Body bytes received by `put` and `uploadPart`. */
  bytesUploaded: number;
}

export interface MemoryStoreOptions {
  /** Defaults to `memory-bucket`. */
  bucket?: string;
  /** Overrides of the S3 limits, such as a small `minPartSize` for fast multipart tests. */
  limits?: Partial<StoreLimits>;
  /** Largest page a listing returns. Defaults to 1,000, as on S3. */
  maxListKeys?: number;
  /** Source of `lastModified` and `initiated` times. Defaults to the system clock. */
  now?: () => Date;
  /** When false, every request rejects with `NoSuchBucketError`. Defaults to true. */
  bucketExists?: boolean;
}

export interface PutRawOptions {
  lastModified?: Date;
  /** Version to store instead of a fresh one. */
  version?: string;
}

interface StoredObject {
  body: Buffer;
  version: string;
  lastModified: Date;
  contentType: string | undefined;
}

interface StoredPart {
  etag: string;
  body: Buffer;
}

interface MultipartUpload {
  key: string;
  uploadId: string;
  initiated: Date;
  contentType: string | undefined;
  parts: Map<number, StoredPart>;
}

/** Orders strings by their UTF-8 bytes, which is the order object stores list keys in. */
export function compareKeys(left: string, right: string): number {
  return Buffer.compare(Buffer.from(left, 'utf8'), Buffer.from(right, 'utf8'));
}

export class MemoryStore implements ObjectStore {
  readonly kind = 'memory' as const;
  readonly bucket: string;
  readonly limits: StoreLimits;

  private readonly maxListKeys: number;
  private readonly now: () => Date;
  private readonly bucketExists: boolean;

  private readonly objects = new Map<string, StoredObject>();
  /** Keys of `objects` in byte order, rebuilt lazily after a key is added or removed. */
  private sortedKeys: string[] | undefined;
  private readonly uploads = new Map<string, MultipartUpload>();

  private writeSequence = 0;
  private counterValues: MemoryStoreCounters = emptyCounters();

  constructor(options: MemoryStoreOptions = {}) {
    this.bucket = options.bucket ?? 'memory-bucket';
    this.limits = Object.freeze({ ...S3_LIMITS, ...options.limits });
    this.maxListKeys = options.maxListKeys ?? S3_MAX_LIST_KEYS;
    this.now = options.now ?? (() => new Date());
    this.bucketExists = options.bucketExists ?? true;

    if (this.limits.minPartSize < 1 || this.limits.maxPartSize < this.limits.minPartSize || this.limits.maxParts < 1) {
      throw new RangeError(`invalid memory store limits ${JSON.stringify(this.limits)}: need 1 <= minPartSize <= maxPartSize and maxParts >= 1`);
    }
  }

  // ---------------------------------------------------------------------------
  // Test helpers: none of these count as requests.

  /** Stores an object directly, skipping validation, limits and request counters. */
  putRaw(key: string, body: Buffer | string, options: PutRawOptions = {}): ObjectInfo {
    const bytes = Buffer.from(body);
    const stored: StoredObject = {
      body: bytes,
      version: options.version ?? this.nextVersion(bytes),
      lastModified: options.lastModified ?? this.now(),
      contentType: undefined,
    };
    this.storeObject(key, stored);
    return infoOf(key, stored);
  }

  /** Returns a copy of an object's bytes, or undefined when the key does not exist. */
  getRaw(key: string): Buffer | undefined {
    const stored = this.objects.get(key);
    return stored === undefined ? undefined : Buffer.from(stored.body);
  }

  /** Returns every key in byte order. */
  keys(): string[] {
    return [...this.orderedKeys()];
  }

  /** Returns a copy of the bucket contents, keyed in byte order. */
  snapshot(): Map<string, Buffer> {
    const copy = new Map<string, Buffer>();
    for (const key of this.orderedKeys()) {
      copy.set(key, Buffer.from(this.objects.get(key)!.body));
    }
    return copy;
  }

  /** Returns the content type given at write time, if any. */
  contentTypeOf(key: string): string | undefined {
    return this.objects.get(key)?.contentType;
  }

  /** Returns the number of multipart uploads that were created and neither completed nor aborted. */
  pendingUploadCount(): number {
    return this.uploads.size;
  }

  counters(): MemoryStoreCounters {
    return { ...this.counterValues, requests: { ...this.counterValues.requests } };
  }

  requestCount(operation: MemoryOperation): number {
    return this.counterValues.requests[operation];
  }

  resetCounters(): void {
    this.counterValues = emptyCounters();
  }

  // ---------------------------------------------------------------------------
  // ObjectStore

  async list(request: ListRequest): Promise<ListPage> {
    this.begin('list', undefined, request.signal);

    const maxKeys = Math.min(request.maxKeys ?? this.maxListKeys, this.maxListKeys);
    if (!Number.isInteger(maxKeys) || maxKeys < 0) {
      throw this.invalid('list', undefined, `invalid maxKeys ${String(request.maxKeys)}: expected a non-negative integer`);
    }

    let position: ListPosition | undefined;
    if (request.continuationToken !== undefined) {
      position = decodeListPosition(request.continuationToken);
      if (position === undefined) {
        throw this.invalid('list', undefined, `invalid continuation token ${JSON.stringify(request.continuationToken)}: pass the nextToken of the previous page unchanged`);
      }
    } else if (request.startAfter !== undefined && request.startAfter !== '') {
      position = { after: request.startAfter, isPrefix: false };
    }

    const delimiter = request.delimiter === '' ? undefined : request.delimiter;
    const objects: ObjectInfo[] = [];
    const prefixes: string[] = [];
    let last: ListPosition | undefined;
    let truncated = false;

    for (const key of this.keysFrom(request.prefix, position)) {
      const commonPrefix = delimiter === undefined ? undefined : commonPrefixOf(key, request.prefix, delimiter);

      // Keys under the common prefix that was just returned are folded into it.
      if (commonPrefix !== undefined && last?.isPrefix === true && last.after === commonPrefix) continue;

      if (objects.length + prefixes.length >= maxKeys) {
        truncated = true;
        break;
      }

      if (commonPrefix !== undefined) {
        prefixes.push(commonPrefix);
        last = { after: commonPrefix, isPrefix: true };
      } else {
        objects.push(infoOf(key, this.objects.get(key)!));
        last = { after: key, isPrefix: false };
      }
    }

    const page: ListPage = { objects, prefixes };
    // A page of zero entries (maxKeys 0) has no position to resume from, so it ends the listing.
    if (truncated && last !== undefined) page.nextToken = encodeListPosition(last);
    return page;
  }

  async head(key: string, options: SignalOption = {}): Promise<ObjectInfo> {
    this.begin('head', key, options.signal);
    return infoOf(key, this.existing('head', key));
  }

  async get(key: string, request: GetRequest = {}): Promise<GetResult> {
    this.begin('get', key, request.signal);
    const stored = this.existing('get', key);

    if (request.ifVersion !== undefined && request.ifVersion !== stored.version) {
      throw new PreconditionFailedError(`object ${key} in bucket ${this.bucket} changed: its version is ${stored.version}, not the expected ${request.ifVersion}`, {
        operation: 'get',
        bucket: this.bucket,
        key,
        httpStatus: 412,
        serviceCode: 'PreconditionFailed',
      });
    }

    let body = stored.body;
    if (request.range !== undefined) {
      const { start, end } = request.range;
      if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
        throw this.invalid('get', key, `invalid byte range ${start}-${end}: expected integers with 0 <= start <= end`);
      }
      if (start < end && start >= stored.body.length) {
        throw this.invalid('get', key, `byte range ${start}-${end} starts at or past the end of object ${key} (${stored.body.length} bytes)`, 416, 'InvalidRange');
      }
      body = stored.body.subarray(start, Math.min(end, stored.body.length));
    }

    this.counterValues.bytesFetched += body.length;
    return { info: infoOf(key, stored), body: Buffer.from(body) };
  }

  async put(key: string, body: Buffer, request: PutRequest = {}): Promise<ObjectInfo> {
    this.begin('put', key, request.signal);
    this.validateKey('put', key);
    this.counterValues.bytesUploaded += body.length;

    if (body.length > this.limits.maxSingleRequestSize) {
      throw this.invalid('put', key, `object ${key} of ${body.length} bytes exceeds the single-request limit of ${this.limits.maxSingleRequestSize} bytes: use a multipart upload`, 400, 'EntityTooLarge');
    }
    if (request.ifNoneMatch === true && this.objects.has(key)) {
      throw new PreconditionFailedError(`object ${key} already exists in bucket ${this.bucket} and the put requested ifNoneMatch`, {
        operation: 'put',
        bucket: this.bucket,
        key,
        httpStatus: 412,
        serviceCode: 'PreconditionFailed',
      });
    }

    const bytes = Buffer.from(body);
    const stored: StoredObject = {
      body: bytes,
      version: this.nextVersion(bytes),
      lastModified: this.now(),
      contentType: request.contentType,
    };
    this.storeObject(key, stored);
    return infoOf(key, stored);
  }

  async createMultipartUpload(key: string, options: SignalOption & { contentType?: string } = {}): Promise<string> {
    this.begin('createMultipartUpload', key, options.signal);
    this.validateKey('createMultipartUpload', key);

    const uploadId = randomBytes(16).toString('hex');
    this.uploads.set(uploadId, {
      key,
      uploadId,
      initiated: this.now(),
      contentType: options.contentType,
      parts: new Map(),
    });
    return uploadId;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, options: SignalOption = {}): Promise<CompletedPart> {
    this.begin('uploadPart', key, options.signal);
    this.counterValues.bytesUploaded += body.length;
    const upload = this.existingUpload('uploadPart', key, uploadId);

    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > this.limits.maxParts) {
      throw this.invalid('uploadPart', key, `invalid part number ${partNumber}: expected an integer from 1 to ${this.limits.maxParts}`);
    }
    if (body.length > this.limits.maxPartSize) {
      throw this.invalid('uploadPart', key, `part ${partNumber} of ${body.length} bytes exceeds the part size limit of ${this.limits.maxPartSize} bytes`, 400, 'EntityTooLarge');
    }

    // Uploading a part number again replaces the earlier part, as on S3.
    const bytes = Buffer.from(body);
    const etag = createHash('md5').update(bytes).digest('hex');
    upload.parts.set(partNumber, { etag, body: bytes });
    return { partNumber, etag };
  }

  async completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[], options: SignalOption = {}): Promise<ObjectInfo> {
    this.begin('completeMultipartUpload', key, options.signal);
    const upload = this.existingUpload('completeMultipartUpload', key, uploadId);

    if (parts.length === 0) {
      throw this.invalid('completeMultipartUpload', key, `cannot complete upload ${uploadId} of ${key} with no parts: upload at least one part`, 400, 'MalformedXML');
    }

    for (const [index, part] of parts.entries()) {
      const previous = parts[index - 1];
      if (previous !== undefined && part.partNumber <= previous.partNumber) {
        throw this.invalid('completeMultipartUpload', key, `parts of upload ${uploadId} are not in ascending order: part ${part.partNumber} follows part ${previous.partNumber}`, 400, 'InvalidPartOrder');
      }
    }

    const bodies: Buffer[] = [];
    const digest = createHash('md5');
    for (const [index, part] of parts.entries()) {
      const stored = upload.parts.get(part.partNumber);
      if (stored === undefined || stored.etag !== stripQuotes(part.etag)) {
        throw this.invalid('completeMultipartUpload', key, `part ${part.partNumber} of upload ${uploadId} was not uploaded or has a different ETag than ${part.etag}`, 400, 'InvalidPart');
      }

      const isLast = index === parts.length - 1;
      if (!isLast && stored.body.length < this.limits.minPartSize) {
        throw this.invalid('completeMultipartUpload', key, `part ${part.partNumber} of upload ${uploadId} has ${stored.body.length} bytes, below the minimum part size of ${this.limits.minPartSize} bytes for every part but the last`, 400, 'EntityTooSmall');
      }

      bodies.push(stored.body);
      digest.update(Buffer.from(stored.etag, 'hex'));
    }

    this.uploads.delete(uploadId);
    const bytes = Buffer.concat(bodies);
    // Multipart ETags on S3 are the MD5 of the part MD5s followed by the part count.
    // The write sequence is mixed in so that every completion yields a fresh version.
    digest.update(String(++this.writeSequence));
    const stored: StoredObject = {
      body: bytes,
      version: `${digest.digest('hex')}-${parts.length}`,
      lastModified: this.now(),
      contentType: upload.contentType,
    };
    this.storeObject(key, stored);
    return infoOf(key, stored);
  }

  async abortMultipartUpload(key: string, uploadId: string, options: SignalOption = {}): Promise<void> {
    this.begin('abortMultipartUpload', key, options.signal);
    this.existingUpload('abortMultipartUpload', key, uploadId);
    this.uploads.delete(uploadId);
  }

  async listMultipartUploads(prefix: string, options: SignalOption = {}): Promise<MultipartUploadInfo[]> {
    this.begin('listMultipartUploads', undefined, options.signal);

    const matching = [...this.uploads.values()].filter((upload) => upload.key.startsWith(prefix));
    matching.sort((left, right) => compareKeys(left.key, right.key) || left.initiated.getTime() - right.initiated.getTime());
    return matching.map((upload) => ({ key: upload.key, uploadId: upload.uploadId, initiated: new Date(upload.initiated) }));
  }

  async copy(sourceKey: string, destinationKey: string, request: CopyRequest = {}): Promise<ObjectInfo> {
    this.begin('copy', destinationKey, request.signal);
    this.validateKey('copy', destinationKey);
    const source = this.existing('copy', sourceKey);

    if (request.ifSourceVersion !== undefined && request.ifSourceVersion !== source.version) {
      throw new PreconditionFailedError(`copy source ${sourceKey} in bucket ${this.bucket} changed: its version is ${source.version}, not the expected ${request.ifSourceVersion}`, {
        operation: 'copy',
        bucket: this.bucket,
        key: sourceKey,
        httpStatus: 412,
        serviceCode: 'PreconditionFailed',
      });
    }
    // S3 rejects a copy of an object onto itself unless metadata changes, and this store never changes metadata.
    if (sourceKey === destinationKey) {
      throw this.invalid('copy', destinationKey, `cannot copy object ${sourceKey} onto itself`, 400, 'InvalidRequest');
    }

    const stored: StoredObject = {
      body: source.body,
      version: this.nextVersion(source.body),
      lastModified: this.now(),
      contentType: source.contentType,
    };
    this.storeObject(destinationKey, stored);
    return infoOf(destinationKey, stored);
  }

  async delete(key: string, options: SignalOption = {}): Promise<void> {
    this.begin('delete', key, options.signal);
    this.removeObject(key);
  }

  async deleteMany(keys: string[], options: SignalOption = {}): Promise<void> {
    this.begin('deleteMany', undefined, options.signal);
    for (const key of keys) this.removeObject(key);
  }

  // ---------------------------------------------------------------------------
  // Internals

  /** Counts the request, then rejects it when it was aborted or the bucket is missing. */
  private begin(operation: MemoryOperation, key: string | undefined, signal: AbortSignal | undefined): void {
    this.counterValues.requests[operation] += 1;

    if (signal?.aborted === true) {
      throw new AbortedError(`${operation} on bucket ${this.bucket} was aborted before it started`, {
        operation,
        bucket: this.bucket,
        key,
        cause: signal.reason,
      });
    }
    if (!this.bucketExists) {
      throw new NoSuchBucketError(`bucket ${this.bucket} does not exist: check the bucket name`, {
        operation,
        bucket: this.bucket,
        key,
        httpStatus: 404,
        serviceCode: 'NoSuchBucket',
      });
    }
  }

  private validateKey(operation: MemoryOperation, key: string): void {
    // S3 limits keys to 1,024 bytes of UTF-8 and rejects the empty key.
    const length = Buffer.byteLength(key, 'utf8');
    if (length === 0 || length > 1024) {
      throw this.invalid(operation, key, `invalid object key of ${length} bytes: keys must have 1 to 1024 bytes of UTF-8`, 400, 'KeyTooLongError');
    }
  }

  private existing(operation: MemoryOperation, key: string): StoredObject {
    const stored = this.objects.get(key);
    if (stored === undefined) {
      throw new NotFoundError(`object ${key} not found in bucket ${this.bucket}`, {
        operation,
        bucket: this.bucket,
        key,
        httpStatus: 404,
        serviceCode: 'NoSuchKey',
      });
    }
    return stored;
  }

  private existingUpload(operation: MemoryOperation, key: string, uploadId: string): MultipartUpload {
    const upload = this.uploads.get(uploadId);
    if (upload === undefined || upload.key !== key) {
      throw new NotFoundError(`multipart upload ${uploadId} of ${key} not found in bucket ${this.bucket}: it was completed, aborted or never created`, {
        operation,
        bucket: this.bucket,
        key,
        httpStatus: 404,
        serviceCode: 'NoSuchUpload',
      });
    }
    return upload;
  }

  private invalid(operation: MemoryOperation, key: string | undefined, message: string, httpStatus = 400, serviceCode = 'InvalidArgument'): StoreError {
    return new InvalidRequestError(message, { operation, bucket: this.bucket, key, httpStatus, serviceCode });
  }

  private nextVersion(body: Buffer): string {
    this.writeSequence += 1;
    return createHash('md5').update(body).update(String(this.writeSequence)).digest('hex');
  }

  private storeObject(key: string, stored: StoredObject): void {
    if (!this.objects.has(key)) this.sortedKeys = undefined;
    this.objects.set(key, stored);
  }

  private removeObject(key: string): void {
    if (this.objects.delete(key)) this.sortedKeys = undefined;
  }

  private orderedKeys(): string[] {
    this.sortedKeys ??= [...this.objects.keys()].sort(compareKeys);
    return this.sortedKeys;
  }

  /** Yields keys under `prefix` in byte order that sort after `position`. */
  private *keysFrom(prefix: string, position: ListPosition | undefined): Generator<string> {
    const keys = this.orderedKeys();
    const startBound = position === undefined || compareKeys(position.after, prefix) < 0 ? prefix : position.after;
    let index = lowerBound(keys, startBound);

    for (; index < keys.length; index++) {
      const key = keys[index]!;
      // Keys under a prefix are contiguous in byte order, so the first key past them ends the scan.
      if (!key.startsWith(prefix)) return;
      if (position !== undefined) {
        if (compareKeys(key, position.after) <= 0) continue;
        if (position.isPrefix && key.startsWith(position.after)) continue;
      }
      yield key;
    }
  }
}

function emptyCounters(): MemoryStoreCounters {
  const requests = Object.fromEntries(MEMORY_OPERATIONS.map((operation) => [operation, 0])) as Record<MemoryOperation, number>;
  return { requests, bytesFetched: 0, bytesUploaded: 0 };
}

function infoOf(key: string, stored: StoredObject): ObjectInfo {
  return { key, size: stored.body.length, version: stored.version, lastModified: new Date(stored.lastModified) };
}

/** Returns the common prefix `key` rolls up into, or undefined when the key is listed itself. */
function commonPrefixOf(key: string, prefix: string, delimiter: string): string | undefined {
  const index = key.indexOf(delimiter, prefix.length);
  return index === -1 ? undefined : key.slice(0, index + delimiter.length);
}

/** Returns the index of the first key that sorts at or after `bound`. */
function lowerBound(keys: string[], bound: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (compareKeys(keys[middle]!, bound) < 0) low = middle + 1;
    else high = middle;
  }
  return low;
}

function stripQuotes(etag: string): string {
  return etag.replace(/^"(.*)"$/, '$1');
}
