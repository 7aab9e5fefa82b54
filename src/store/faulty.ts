/**
 * An `ObjectStore` wrapper that injects failures and delays, for tests of the
 * layers above the store (read retries, upload aborts, errno mapping).
 *
 * Failures are drawn from a seeded generator, so a test run with the same
 * seed and the same sequence of calls fails the same calls. A failed call
 * never reaches the wrapped store. Delays wait on a timer that the call's
 * `AbortSignal` cancels.
 */

import {
  AbortedError,
  AccessDeniedError,
  InvalidCredentialsError,
  NotFoundError,
  PreconditionFailedError,
  ThrottledError,
  TransientError,
  type StoreError,
  type StoreErrorCode,
  type StoreErrorContext,
} from './errors.js';
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

export type StoreOperation = Exclude<keyof ObjectStore, 'kind' | 'bucket' | 'limits'>;

/** Error kinds the wrapper can inject. */
export type InjectedErrorCode = Extract<StoreErrorCode, 'Throttled' | 'Transient' | 'InvalidCredentials' | 'AccessDenied' | 'PreconditionFailed' | 'NotFound'>;

export interface OperationFaults {
  /** Probability from 0 to 1 that a call fails. */
  failureRate?: number;
  /** Error that failing calls reject with. Defaults to `Transient`. */
  errorCode?: InjectedErrorCode;
  /** Delay before each call, in milliseconds. */
  delayMs?: number;
}

export interface FaultyStoreOptions {
  /** Seed of the failure draws. Defaults to 1. */
  seed?: number;
  /** Faults for every operation without its own entry in `operations`. */
  defaults?: OperationFaults;
  operations?: Partial<Record<StoreOperation, OperationFaults>>;
}

const ERROR_CLASS_BY_CODE: Record<InjectedErrorCode, new (message: string, context: StoreErrorContext) => StoreError> = {
  Throttled: ThrottledError,
  Transient: TransientError,
  InvalidCredentials: InvalidCredentialsError,
  AccessDenied: AccessDeniedError,
  PreconditionFailed: PreconditionFailedError,
  NotFound: NotFoundError,
};

export class FaultyStore implements ObjectStore {
  readonly kind;
  readonly bucket;
  readonly limits;

  /** Faults per operation, which tests may replace between calls. */
  readonly operations: Partial<Record<StoreOperation, OperationFaults>>;
  private readonly defaults: OperationFaults;
  private randomState: number;
  private injected = 0;

  constructor(
    private readonly inner: ObjectStore,
    options: FaultyStoreOptions = {},
  ) {
    this.kind = inner.kind;
    this.bucket = inner.bucket;
    this.limits = inner.limits;
    this.defaults = options.defaults ?? {};
    this.operations = { ...options.operations };
    this.randomState = (options.seed ?? 1) >>> 0 || 1;
  }

  /** Number of failures injected so far. */
  get injectedFailures(): number {
    return this.injected;
  }

  list(request: ListRequest): Promise<ListPage> {
    return this.call('list', undefined, request.signal, () => this.inner.list(request));
  }

  head(key: string, options?: SignalOption): Promise<ObjectInfo> {
    return this.call('head', key, options?.signal, () => this.inner.head(key, options));
  }

  get(key: string, request?: GetRequest): Promise<GetResult> {
    return this.call('get', key, request?.signal, () => this.inner.get(key, request));
  }

  put(key: string, body: Buffer, request?: PutRequest): Promise<ObjectInfo> {
    return this.call('put', key, request?.signal, () => this.inner.put(key, body, request));
  }

  createMultipartUpload(key: string, options?: SignalOption & { contentType?: string }): Promise<string> {
    return this.call('createMultipartUpload', key, options?.signal, () => this.inner.createMultipartUpload(key, options));
  }

  uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, options?: SignalOption): Promise<CompletedPart> {
    return this.call('uploadPart', key, options?.signal, () => this.inner.uploadPart(key, uploadId, partNumber, body, options));
  }

  completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[], options?: SignalOption): Promise<ObjectInfo> {
    return this.call('completeMultipartUpload', key, options?.signal, () => this.inner.completeMultipartUpload(key, uploadId, parts, options));
  }

  abortMultipartUpload(key: string, uploadId: string, options?: SignalOption): Promise<void> {
    return this.call('abortMultipartUpload', key, options?.signal, () => this.inner.abortMultipartUpload(key, uploadId, options));
  }

  listMultipartUploads(prefix: string, options?: SignalOption): Promise<MultipartUploadInfo[]> {
    return this.call('listMultipartUploads', undefined, options?.signal, () => this.inner.listMultipartUploads(prefix, options));
  }

  copy(sourceKey: string, destinationKey: string, request?: CopyRequest): Promise<ObjectInfo> {
    return this.call('copy', sourceKey, request?.signal, () => this.inner.copy(sourceKey, destinationKey, request));
  }

  delete(key: string, options?: SignalOption): Promise<void> {
    return this.call('delete', key, options?.signal, () => this.inner.delete(key, options));
  }

  deleteMany(keys: string[], options?: SignalOption): Promise<void> {
    return this.call('deleteMany', undefined, options?.signal, () => this.inner.deleteMany(keys, options));
  }

  private async call<T>(operation: StoreOperation, key: string | undefined, signal: AbortSignal | undefined, forward: () => Promise<T>): Promise<T> {
    const faults = this.operations[operation] ?? this.defaults;
    // The draw happens before the delay, so the sequence of failures does not depend on timing.
    const fails = this.nextRandom() < (faults.failureRate ?? 0);

    if (faults.delayMs !== undefined && faults.delayMs > 0) await this.delay(faults.delayMs, operation, key, signal);

    if (fails) {
      this.injected += 1;
      const code = faults.errorCode ?? 'Transient';
      throw new ERROR_CLASS_BY_CODE[code](`injected ${code} failure of ${operation}${key === undefined ? '' : ` on ${key}`}`, {
        operation,
        bucket: this.bucket,
        key,
        serviceCode: 'InjectedFault',
      });
    }
    return forward();
  }

  private delay(milliseconds: number, operation: StoreOperation, key: string | undefined, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const aborted = (): AbortedError => new AbortedError(`${operation} was aborted during an injected delay`, { operation, bucket: this.bucket, key, cause: signal?.reason });
      if (signal?.aborted === true) {
        reject(aborted());
        return;
      }
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(aborted());
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, milliseconds);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Returns the next number in [0, 1) of a mulberry32 generator. */
  private nextRandom(): number {
    this.randomState = (this.randomState + 0x6d2b79f5) >>> 0;
    let value = this.randomState;
    value = Math.imul(value ^ (value >>> 15), value | 1);
    value ^= value + Math.imul(value ^ (value >>> 7), value | 61);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  }
}
