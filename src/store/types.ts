/**
 * The narrow contract between the filesystem and an object store.
 *
 * Every backend (S3, GCS, the in-memory model) implements `ObjectStore`, and
 * the filesystem core talks to storage only through it. Keys are full object
 * keys in the bucket: the mounted prefix is applied by the filesystem, not by
 * the store. Every method rejects with a `StoreError` subclass from
 * `./errors.ts` and never with a raw SDK error.
 *
 * `version` is the token that identifies one write of an object: the ETag on
 * S3 and the generation on GCS. Reads pinned to a version fail with
 * `PreconditionFailedError` once the object has been replaced.
 */

export type StoreKind = 's3' | 'gcs' | 'memory';

export interface ObjectInfo {
  key: string;
  size: number;
  /** ETag on S3 (quotes removed), generation on GCS. */
  version: string;
  lastModified: Date;
}

export interface ListRequest {
  prefix: string;
  /** Usually '/'. Without it the listing is flat and `prefixes` is empty. */
  delimiter?: string;
  /** Token returned as `nextToken` by the previous page. */
  continuationToken?: string;
  /** Page size; the store caps it at its own maximum (1,000 on S3). */
  maxKeys?: number;
  /** List keys that sort after this key (S3 StartAfter, GCS startOffset). */
  startAfter?: string;
  signal?: AbortSignal;
}

export interface ListPage {
  objects: ObjectInfo[];
  /** Common prefixes, each ending with the delimiter. */
  prefixes: string[];
  /** Absent on the last page. */
  nextToken?: string;
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, exclusive. */
  end: number;
}

export interface GetRequest {
  range?: ByteRange;
  /** Fail with `PreconditionFailedError` unless the object still has this version. */
  ifVersion?: string;
  signal?: AbortSignal;
  /**
   * Return the body as the chunks it arrived in (`GetResult.pieces`) rather
   * than copied into one buffer. A store may ignore this and fill `body`.
   */
  pieces?: boolean;
}

export interface GetResult {
  info: ObjectInfo;
  /** The bytes, or an empty buffer when `pieces` contains them. */
  body: Buffer;
  /** With `GetRequest.pieces`, the bytes in order as they arrived, when the store kept them so. */
  pieces?: Buffer[];
}

/** Returns the bytes of a GET result as pieces in order, whichever form the store returned. */
export function bodyPieces(result: GetResult): Buffer[] {
  return result.pieces ?? [result.body];
}

/** Returns the number of bytes of a GET result. */
export function bodyLength(result: Pick<GetResult, 'body' | 'pieces'>): number {
  return result.pieces === undefined ? result.body.length : result.pieces.reduce((total, piece) => total + piece.length, 0);
}

export interface PutRequest {
  /** Fail with `PreconditionFailedError` if any object exists under the key. */
  ifNoneMatch?: boolean;
  contentType?: string;
  signal?: AbortSignal;
}

export interface CompletedPart {
  partNumber: number;
  etag: string;
}

export interface MultipartUploadInfo {
  key: string;
  uploadId: string;
  initiated: Date;
}

export interface CopyRequest {
  /** Fail with `PreconditionFailedError` unless the source still has this version. */
  ifSourceVersion?: string;
  /** Size of the source, when known, so that large copies can use part copies. */
  sourceSize?: number;
  signal?: AbortSignal;
}

export interface StoreLimits {
  /** Smallest part except the last one, in bytes (5 MiB on S3). */
  minPartSize: number;
  /** Largest part, in bytes (5 GiB on S3). */
  maxPartSize: number;
  /** Highest part number (10,000 on S3). */
  maxParts: number;
  /** Largest object one PUT or one CopyObject may write, in bytes. */
  maxSingleRequestSize: number;
}

export interface SignalOption {
  signal?: AbortSignal;
}

export interface ObjectStore {
  readonly kind: StoreKind;
  readonly bucket: string;
  readonly limits: StoreLimits;

  list(request: ListRequest): Promise<ListPage>;
  head(key: string, options?: SignalOption): Promise<ObjectInfo>;
  get(key: string, request?: GetRequest): Promise<GetResult>;
  put(key: string, body: Buffer, request?: PutRequest): Promise<ObjectInfo>;

  createMultipartUpload(key: string, options?: SignalOption & { contentType?: string }): Promise<string>;
  uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, options?: SignalOption): Promise<CompletedPart>;
  completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[], options?: SignalOption): Promise<ObjectInfo>;
  abortMultipartUpload(key: string, uploadId: string, options?: SignalOption): Promise<void>;
  listMultipartUploads(prefix: string, options?: SignalOption): Promise<MultipartUploadInfo[]>;

  /** Server-side copy; large sources are copied in parts where the backend needs it. */
  copy(sourceKey: string, destinationKey: string, request?: CopyRequest): Promise<ObjectInfo>;
  /** Deleting a missing key succeeds, as on S3. */
  delete(key: string, options?: SignalOption): Promise<void>;
  deleteMany(keys: string[], options?: SignalOption): Promise<void>;
}
