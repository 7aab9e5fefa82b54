/**
 * The request scheduler of one mount, in front of its store.
 *
 * Store calls wait here, in order, for one of a fixed number of slots sized
 * to the HTTP socket pool, instead of waiting inside the HTTP agent where
 * nothing can order them. Two `p-queue`s split the slots:
 * - reads and metadata share most slots. Metadata calls (list, head, delete,
 *   complete, abort) go first, because `ls` and `stat` of sandbox code wait
 *   on them. Ranged GETs follow in the order they were issued, so the GETs of
 *   two readers interleave and neither starves the other.
 * - uploads (PUT, part uploads, copies) have their own slots, a quarter by
 *   default. A flood of reads therefore never holds uploads back, and a large
 *   upload, already bounded by the memory budget, never takes the slots a
 *   blocked reader needs.
 */

import PQueue from 'p-queue';

import { AbortedError } from './errors.js';
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
} from './types.js';

export interface ScheduledStoreOptions {
  /** Store calls in flight at once; match the HTTP agent's socket count. */
  concurrency: number;
  /** Slots kept for uploads while any upload waits. */
  reservedForUploads?: number;
}

const PRIORITY_METADATA = 2;
const PRIORITY_READ = 1;
const PRIORITY_UPLOAD = 0;

export class ScheduledStore implements ObjectStore {
  readonly kind;
  readonly bucket;
  readonly limits;

  private readonly inner: ObjectStore;
  /** Reads and metadata calls; bounded so that waiting uploads keep their reserved slots. */
  private readonly fast: PQueue;
  /** Uploads: their own queue, so their slots are never taken by reads. */
  private readonly uploads: PQueue;

  constructor(inner: ObjectStore, options: ScheduledStoreOptions) {
    this.inner = inner;
    this.kind = inner.kind;
    this.bucket = inner.bucket;
    this.limits = inner.limits;

    const reserved = Math.max(1, Math.min(options.reservedForUploads ?? Math.ceil(options.concurrency / 4), options.concurrency - 1));
    this.fast = new PQueue({ concurrency: options.concurrency - reserved });
    this.uploads = new PQueue({ concurrency: reserved });
  }

  /** Calls waiting for a slot, by class, for metrics and tests. */
  get waiting(): { fast: number; uploads: number } {
    return { fast: this.fast.size, uploads: this.uploads.size };
  }

  private schedule<T>(queue: PQueue, priority: number, signal: AbortSignal | undefined, operation: string, key: string | undefined, call: () => Promise<T>): Promise<T> {
    if (signal?.aborted) {
      return Promise.reject(new AbortedError(`${operation} was cancelled before it started`, { operation, bucket: this.bucket, key, cause: signal.reason }));
    }

    // A call cancelled while it waits leaves the queue without running.
    return queue.add(
      async () => {
        if (signal?.aborted) {
          throw new AbortedError(`${operation} was cancelled while it waited for a connection`, { operation, bucket: this.bucket, key, cause: signal.reason });
        }
        return call();
      },
      { priority },
    ) as Promise<T>;
  }

  list(request: ListRequest): Promise<ListPage> {
    return this.schedule(this.fast, PRIORITY_METADATA, request.signal, 'list', request.prefix, () => this.inner.list(request));
  }

  head(key: string, options?: SignalOption): Promise<ObjectInfo> {
    return this.schedule(this.fast, PRIORITY_METADATA, options?.signal, 'head', key, () => this.inner.head(key, options));
  }

  get(key: string, request?: GetRequest): Promise<GetResult> {
    return this.schedule(this.fast, PRIORITY_READ, request?.signal, 'get', key, () => this.inner.get(key, request));
  }

  put(key: string, body: Buffer, request?: PutRequest): Promise<ObjectInfo> {
    return this.schedule(this.uploads, PRIORITY_UPLOAD, request?.signal, 'put', key, () => this.inner.put(key, body, request));
  }

  createMultipartUpload(key: string, options?: SignalOption & { contentType?: string }): Promise<string> {
    return this.schedule(this.fast, PRIORITY_METADATA, options?.signal, 'createMultipartUpload', key, () => this.inner.createMultipartUpload(key, options));
  }

  uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, options?: SignalOption): Promise<CompletedPart> {
    return this.schedule(this.uploads, PRIORITY_UPLOAD, options?.signal, 'uploadPart', key, () => this.inner.uploadPart(key, uploadId, partNumber, body, options));
  }

  completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[], options?: SignalOption): Promise<ObjectInfo> {
    return this.schedule(this.fast, PRIORITY_METADATA, options?.signal, 'completeMultipartUpload', key, () => this.inner.completeMultipartUpload(key, uploadId, parts, options));
  }

  abortMultipartUpload(key: string, uploadId: string, options?: SignalOption): Promise<void> {
    return this.schedule(this.fast, PRIORITY_METADATA, options?.signal, 'abortMultipartUpload', key, () => this.inner.abortMultipartUpload(key, uploadId, options));
  }

  listMultipartUploads(prefix: string, options?: SignalOption): Promise<MultipartUploadInfo[]> {
    return this.schedule(this.fast, PRIORITY_METADATA, options?.signal, 'listMultipartUploads', prefix, () => this.inner.listMultipartUploads(prefix, options));
  }

  copy(sourceKey: string, destinationKey: string, request?: CopyRequest): Promise<ObjectInfo> {
    return this.schedule(this.uploads, PRIORITY_UPLOAD, request?.signal, 'copy', destinationKey, () => this.inner.copy(sourceKey, destinationKey, request));
  }

  delete(key: string, options?: SignalOption): Promise<void> {
    return this.schedule(this.fast, PRIORITY_METADATA, options?.signal, 'delete', key, () => this.inner.delete(key, options));
  }

  deleteMany(keys: string[], options?: SignalOption): Promise<void> {
    return this.schedule(this.fast, PRIORITY_METADATA, options?.signal, 'deleteMany', keys[0], () => this.inner.deleteMany(keys, options));
  }
}
