/**
 * `ObjectStore` on the Google Cloud Storage JSON API, through
 * @google-cloud/storage 7 (its request stack: endpoint, retries and the
 * `authClient` hook) with the request parameters chosen here.
 *
 * Design notes.
 *
 * Authorization: the storage client gets an auth adapter whose
 * `getRequestHeaders` returns the bearer token that the mount's
 * `CredentialSource` holds. The source renews tokens in the background, so a
 * request waits for an exchange only when the held token has expired. A 401
 * response triggers one `invalidate()` and one retry of the request.
 *
 * Versions and pinned reads: `version` is the object generation. A read
 * pinned to a version sends `ifGenerationMatch`, and the store also compares
 * the `x-goog-generation` header of the response with the pinned generation, so
 * bytes of another generation are never returned even from a server that
 * ignores the precondition (fake-gcs-server 1.56.1 does, on downloads and
 * metadata reads). A pinned copy sends `sourceGeneration` with
 * `ifSourceGenerationMatch`, so only the pinned bytes can be copied; when the
 * pinned generation is gone, a HEAD tells a replaced source
 * (PreconditionFailed) from a deleted one (NotFound).
 *
 * Listing: pages are addressed by position, not by the server's page token.
 * The continuation token records the last entry returned (a key, or a common
 * prefix whose keys were all folded into it), and the next request starts
 * there with `startOffset`. The store merges `items` and `prefixes` in UTF-8
 * byte order and cuts the page at `maxKeys` entries itself. This gives pages
 * of at most `maxKeys` entries where a common prefix counts once, on real GCS
 * and on emulators that return every prefix on every page (fake-gcs-server
 * 1.56.1 applies `maxResults` to items only), and makes `startAfter` and
 * continuation one mechanism.
 *
 * Multipart uploads: GCS has two ways to assemble an object from parts: the
 * XML API multipart upload and `compose` of separate objects. This store uses
 * compose, because fake-gcs-server 1.56.1 has no XML multipart API (its router
 * sends `POST /BUCKET/KEY?uploads` to the upload handler, which returns 400
 * "invalid uploadType") while compose works on it and on GCS, and because the
 * XML API would need a second authorization and error model. Each upload
 * lives under a reserved prefix (`.bucketmount-uploads/` by default):
 *
 *   PREFIX/UPLOAD_ID/upload         marker: destination key and content type
 *   PREFIX/UPLOAD_ID/part-00001     one object per part; its generation is the ETag
 *   PREFIX/UPLOAD_ID/compose-L-I    intermediate composites of level L
 *
 * Completion composes the parts in a tree of at most 32 sources per request
 * (the GCS limit), then deletes every object under PREFIX/UPLOAD_ID/. When a
 * compose fails, it deletes the intermediate composites and keeps the parts,
 * so that the caller can retry or abort, as S3 keeps an upload whose
 * completion failed. Aborting deletes the marker first, so that later part
 * uploads fail with NotFound, then everything else. Every object under the
 * prefix carries the destination key in its metadata, so `listMultipartUploads`
 * also finds parts that outlived an interrupted abort, and abort removes them.
 * Listings of the bucket never show the reserved prefix.
 *
 * Limits: the store takes the S3 limits (parts of 5 MiB to 5 GiB, at most
 * 10,000 of them), so that the write path sizes parts the same on every
 * backend. Compose itself has no minimum part size, and GCS documents no
 * limit on the components of a composite object (it dropped its old limit of
 * 1,024); 10,000 parts need a compose tree of three levels. A limit of 1,024
 * parts made the part size double after every part: part 8 of a 1 GiB file
 * was 1 GiB, far beyond any --memory-limit.
 */

import { createHash, randomBytes } from 'node:crypto';

import { Agent, type Dispatcher } from 'undici';

import type { ApiError, Bucket, File, StorageOptions } from './gcs-library.cjs';

import type { CredentialSource, GcpAccessToken } from '../credentials/types.js';
import type { Logger } from '../observability/logger.js';
import {
  AbortedError,
  InvalidCredentialsError,
  InvalidRequestError,
  NoSuchBucketError,
  NotFoundError,
  PreconditionFailedError,
  StoreError,
  TransientError,
} from './errors.js';
import { decodeListPosition, encodeListPosition, type ListPosition } from './list-position.js';
import { AccessTokenUnavailableError, httpStatusOf, storeErrorFromGcs, type GcsErrorContext } from './gcs-errors.js';
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
import { bodyLength } from './types.js';
import { agentOptions } from './undici-options.js';
import storageLibrary from './gcs-library.cjs';

/**
 * The storage client, loaded from its CommonJS build through gcs-library.cts. The package ships an ES
 * module build too, but that build loads about 40 more files (the ES module
 * builds of fast-xml-parser and html-entities among them), and ES modules cost
 * more to load than CommonJS ones. With google-auth-library already loaded, as
 * in the daemon, `require` of @google-cloud/storage 7.22 took a median of
 * about 60 ms against about 100 ms for `import` (Node 24.21 with its compile
 * cache, shared 2-core VM, 15 runs each, an estimate). In the daemon only this
 * module loads the client, so the two builds are never both loaded.
 */
const { IdempotencyStrategy, RETRYABLE_ERR_FN_DEFAULT, Storage } = storageLibrary;
type Storage = InstanceType<typeof Storage>;

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const EMPTY_BODY = Buffer.alloc(0);

export const GCS_DEFAULT_ENDPOINT = 'https://storage.googleapis.com';
export const DEFAULT_UPLOAD_PREFIX = '.bucketmount-uploads/';

export const GCS_LIMITS: StoreLimits = Object.freeze({
  minPartSize: 5 * MiB,
  maxPartSize: 5 * GiB,
  maxParts: 10_000,
  // A simple upload keeps the whole body in memory, and 5 GiB matches the S3 single PUT limit.
  maxSingleRequestSize: 5 * GiB,
});

/** Largest page the JSON API returns for objects.list. */
const GCS_MAX_LIST_RESULTS = 1000;
/** Most source objects one compose request accepts. */
const MAX_COMPOSE_SOURCES = 32;
/** Largest object name GCS accepts, in bytes of UTF-8. */
const MAX_KEY_BYTES = 1024;
const KEY_METADATA = 'bucketmount-key';
const CONTENT_TYPE_METADATA = 'bucketmount-content-type';
const UPLOAD_ID_PATTERN = /^[0-9a-f]{32}$/;

export interface GcsStoreOptions {
  bucket: string;
  credentials: CredentialSource<GcpAccessToken>;
  /** API root such as `https://storage.googleapis.com`; tests point it at a local proxy. */
  apiEndpoint?: string;
  /** Reserved key prefix of multipart upload parts; must end with '/'. */
  uploadPrefix?: string;
  limits?: Partial<StoreLimits>;
  /** Retries of the storage client for every request; defaults to 4, so a request gets five attempts as on S3. */
  maxRetries?: number;
  /**
   * Timeout of each request sent through the storage client, in milliseconds:
   * the time until the response headers (the upload of a request body
   * included), and then again for reading a response body; defaults to 60,000.
   * NOTE: the client's transport only notices a response body cut short
   * through this timeout, so such a response costs one timeout before its retry.
   */
  requestTimeoutMs?: number;
  /** A download whose connection sends nothing for this long fails and is retried by the read path, in milliseconds; defaults to 30,000. */
  downloadIdleTimeoutMs?: number;
  /** Deletes in flight at once in `deleteMany` and upload cleanup; defaults to 16. */
  deleteConcurrency?: number;
  logger?: Logger;
  /**
   * Called before a request is repeated after GCS rejected the access token,
   * for metrics.
   * TODO: the storage client's own retries (HTTP 429, 5xx, network errors)
   * are not reported here yet; `retryOptions.retryableErrorFn` could count them.
   */
  onRetry?: () => void;
}

/** A JSON API object resource, with the fields this store reads. */
interface ObjectResource {
  name: string;
  size?: string | number;
  generation?: string | number;
  updated?: string;
  timeCreated?: string;
  contentType?: string;
  /** Base64 MD5 of the content; absent on composite objects. */
  md5Hash?: string;
  metadata?: Record<string, string> | null;
}

interface ListResponseBody {
  items?: ObjectResource[];
  prefixes?: string[];
  nextPageToken?: string;
}

interface ListEntry {
  name: string;
  resource?: ObjectResource;
}

/** Compares strings by their UTF-8 bytes, the order GCS lists names in. */
function compareUtf8(left: string, right: string): number {
  return Buffer.compare(Buffer.from(left, 'utf8'), Buffer.from(right, 'utf8'));
}

/** Returns the smallest string that sorts after every string starting with `prefix`. */
function prefixUpperBound(prefix: string): string {
  const codePoints = [...prefix];
  const last = codePoints.pop();
  if (last === undefined) return '';
  let next = last.codePointAt(0)! + 1;
  // Code points in UTF-8 byte order skip the surrogate range.
  if (next >= 0xd800 && next <= 0xdfff) next = 0xe000;
  return codePoints.join('') + String.fromCodePoint(next);
}

function infoOf(resource: ObjectResource): ObjectInfo {
  return {
    key: resource.name,
    size: Number(resource.size ?? 0),
    version: String(resource.generation ?? ''),
    lastModified: new Date(resource.updated ?? resource.timeCreated ?? 0),
  };
}

function stripQuotes(etag: string): string {
  return etag.replace(/^"(.*)"$/, '$1');
}

/** Runs `task` over `items` with at most `concurrency` tasks in flight; rejects with the first failure. */
async function forEachLimited<T>(items: readonly T[], concurrency: number, task: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      await task(items[index]!, index);
    }
  });
  await Promise.all(workers);
}

/** Rejects with an AbortError as soon as `signal` aborts; the underlying request may still finish. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(Object.assign(new Error('the operation was aborted'), { name: 'AbortError', cause: signal.reason }));
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * The storage client's retry rule, plus the failures of its transport
 * (node-fetch 2.7) that the default rule does not recognise: a response body
 * that timed out (which is how a response cut short ends there, see
 * `requestMedia`), a request timeout, a body that is not the JSON announced,
 * and connections refused or closed early.
 */
function isRetryableGcsFailure(error: ApiError): boolean {
  if (RETRYABLE_ERR_FN_DEFAULT(error)) return true;
  const shape = error as unknown as { name?: string; type?: string; code?: unknown };
  if (shape.name === 'FetchError' && ['body-timeout', 'request-timeout', 'invalid-json', 'system'].includes(shape.type ?? '')) return true;
  return typeof shape.code === 'string' && ['ECONNREFUSED', 'ETIMEDOUT', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET'].includes(shape.code);
}

/** Sends a JSON API request through the storage client's authenticated request stack. */
function requestJson<T>(target: File | Bucket, options: Parameters<File['request']>[0]): Promise<{ body: T; response: unknown }> {
  return new Promise((resolve, reject) => {
    target.request(options, (error, body, response) => {
      if (error !== null && error !== undefined) reject(error);
      else resolve({ body: body as T, response });
    });
  });
}

/** Returns the failure as an AbortError (an AbortedError later) when the caller aborted, else unchanged. */
function abortedOr(error: unknown, signal: AbortSignal | undefined): unknown {
  if (signal?.aborted !== true) return error;
  return Object.assign(new Error('the GCS download was aborted', { cause: error }), { name: 'AbortError' });
}

/** Joins each repeated response header into one value, as node:http gives them. */
function singleValued(headers: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const joined: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(headers)) joined[name] = Array.isArray(value) ? value.join(', ') : value;
  return joined;
}

/**
 * Builds the auth client that the storage client calls before each request.
 *
 * @google-cloud/storage 7 bundles google-auth-library 9, whose GoogleAuth
 * merges the result of `getRequestHeaders()` with `Object.assign`. The
 * headers must therefore be a plain object, because the fetch `Headers` that
 * google-auth-library 10's AuthClient returns would be dropped. The storage
 * client calls no other member of the auth client for the requests this
 * store sends (no signed URLs, no resumable uploads), hence the cast.
 */
function createStorageAuthClient(credentials: CredentialSource<GcpAccessToken>): NonNullable<StorageOptions['authClient']> {
  const currentToken = async (): Promise<string> => {
    try {
      return (await credentials.current()).accessToken;
    } catch (error) {
      throw new AccessTokenUnavailableError((error as Error).message, { cause: error });
    }
  };
  const client = {
    getRequestHeaders: async () => ({ Authorization: `Bearer ${await currentToken()}` }),
    getAccessToken: async () => ({ token: await currentToken() }),
    getProjectId: async () => null,
  };
  return client as unknown as NonNullable<StorageOptions['authClient']>;
}

export class GcsStore implements ObjectStore {
  readonly kind = 'gcs' as const;
  readonly bucket: string;
  readonly limits: StoreLimits;

  private readonly storage: Storage;
  private readonly bucketHandle: Bucket;
  private readonly credentials: CredentialSource<GcpAccessToken>;
  private readonly uploadPrefix: string;
  private readonly deleteConcurrency: number;
  private readonly logger: Logger | undefined;
  private readonly onRetry: (() => void) | undefined;
  private readonly apiEndpoint: string;
  private readonly downloadIdleTimeoutMs: number;
  /** Connections of media downloads, which bypass the storage client (see `requestMedia`), created by the first download. */
  private mediaConnections: Dispatcher | undefined;
  /** Set after one listing of the bucket succeeded: a 404 on an object is then the object's, not the bucket's. */
  private bucketConfirmed = false;

  constructor(options: GcsStoreOptions) {
    this.bucket = options.bucket;
    this.credentials = options.credentials;
    this.limits = Object.freeze({ ...GCS_LIMITS, ...options.limits });
    this.uploadPrefix = options.uploadPrefix ?? DEFAULT_UPLOAD_PREFIX;
    this.deleteConcurrency = options.deleteConcurrency ?? 16;
    this.logger = options.logger;
    this.onRetry = options.onRetry;

    if (!this.uploadPrefix.endsWith('/') || this.uploadPrefix === '/') {
      throw new RangeError(`invalid upload prefix "${this.uploadPrefix}": give a non-empty prefix that ends with '/', such as ${DEFAULT_UPLOAD_PREFIX}`);
    }
    if (this.limits.maxParts > MAX_COMPOSE_SOURCES ** 3) {
      throw new RangeError(`invalid maxParts ${this.limits.maxParts}: the compose tree supports at most ${MAX_COMPOSE_SOURCES ** 3} parts`);
    }

    const maxRetries = options.maxRetries ?? 4;
    this.apiEndpoint = (options.apiEndpoint ?? GCS_DEFAULT_ENDPOINT).replace(/\/+$/, '');
    this.downloadIdleTimeoutMs = options.downloadIdleTimeoutMs ?? 30_000;
    this.storage = new Storage({
      apiEndpoint: options.apiEndpoint ?? GCS_DEFAULT_ENDPOINT,
      // Without this the client sends no credentials to an endpoint other than the default one.
      useAuthWithCustomEndpoint: true,
      timeout: options.requestTimeoutMs ?? 60_000,
      authClient: createStorageAuthClient(options.credentials),
      // RetryAlways, because with the default RetryConditional a save without
      // ifGenerationMatch (every part upload) is not retried, and
      // @google-cloud/storage 7.22 File.save then sets the shared
      // retryOptions.autoRetry to false, which stops the retries of every later
      // request of this client. Every request this store sends can be
      // repeated; a repeated conditional create is checked in `upload`.
      // Delays double from 1 s up to 8 s, and no retry starts after 60 s, so a
      // request fails well within the kernel's request timeout (120 s by default).
      retryOptions: {
        autoRetry: maxRetries > 0,
        maxRetries,
        idempotencyStrategy: IdempotencyStrategy.RetryAlways,
        maxRetryDelay: 8,
        totalTimeout: 60,
        retryableErrorFn: isRetryableGcsFailure,
      },
    });
    this.bucketHandle = this.storage.bucket(this.bucket);
  }

  /** Closes the download connections. Idempotent. */
  destroy(): void {
    void this.mediaConnections?.destroy().catch((error: unknown) => {
      this.logger?.debug({ err: error, bucket: this.bucket }, 'closing the GCS download connections failed');
    });
    this.mediaConnections = undefined;
  }

  // ---------------------------------------------------------------------------
  // Listing

  async list(request: ListRequest): Promise<ListPage> {
    const context: GcsErrorContext = { operation: 'list', bucket: this.bucket, bucketLevel: true };
    this.throwIfAborted(context, request.signal);

    const maxKeys = Math.min(request.maxKeys ?? GCS_MAX_LIST_RESULTS, GCS_MAX_LIST_RESULTS);
    if (!Number.isInteger(maxKeys) || maxKeys < 0) {
      throw new InvalidRequestError(`invalid maxKeys ${String(request.maxKeys)}: expected a non-negative integer`, { ...context, serviceCode: 'InvalidArgument' });
    }

    let position: ListPosition | undefined;
    if (request.continuationToken !== undefined) {
      position = decodeListPosition(request.continuationToken);
      if (position === undefined) {
        throw new InvalidRequestError(`invalid continuation token ${JSON.stringify(request.continuationToken)}: pass the nextToken of the previous page unchanged`, {
          ...context,
          serviceCode: 'InvalidArgument',
        });
      }
    } else if (request.startAfter !== undefined && request.startAfter !== '') {
      position = { after: request.startAfter, isPrefix: false };
    }
    if (maxKeys === 0) return { objects: [], prefixes: [] };

    const delimiter = request.delimiter === '' ? undefined : request.delimiter;
    let startOffset: string | undefined;
    if (position !== undefined) {
      // After a common prefix, the next page starts past every key under it.
      startOffset = position.isPrefix ? prefixUpperBound(position.after) : position.after;
    }
    // startOffset is inclusive, so a page that resumes after a key requests one more entry than it returns.
    const maxResults = Math.min(maxKeys + (position === undefined ? 0 : 1), GCS_MAX_LIST_RESULTS);

    let pageToken: string | undefined;
    for (;;) {
      const qs: Record<string, string | number> = { prefix: request.prefix, maxResults, projection: 'noAcl' };
      if (delimiter !== undefined) qs.delimiter = delimiter;
      if (startOffset !== undefined && compareUtf8(startOffset, request.prefix) > 0) qs.startOffset = startOffset;
      if (pageToken !== undefined) qs.pageToken = pageToken;

      const { body } = await this.send(context, request.signal, () => requestJson<ListResponseBody>(this.bucketHandle, { uri: '/o', qs }));
      this.bucketConfirmed = true;

      const entries = this.mergeListEntries(body, position);
      const page: ListPage = { objects: [], prefixes: [] };
      for (const entry of entries.slice(0, maxKeys)) {
        if (entry.resource === undefined) page.prefixes.push(entry.name);
        else page.objects.push(infoOf(entry.resource));
      }

      const last = entries.slice(0, maxKeys).at(-1);
      const more = entries.length > maxKeys || body.nextPageToken !== undefined;
      if (last !== undefined) {
        if (more) page.nextToken = encodeListPosition({ after: last.name, isPrefix: last.resource === undefined });
        return page;
      }
      // Every entry of this server page was an upload part and filtered out, so continue with the server's page token.
      if (body.nextPageToken === undefined) return page;
      pageToken = body.nextPageToken;
    }
  }

  /** Merges items and prefixes in byte order, dropping entries at or before `position` and the upload prefix. */
  private mergeListEntries(body: ListResponseBody, position: ListPosition | undefined): ListEntry[] {
    const entries: ListEntry[] = [
      ...(body.items ?? []).map((resource) => ({ name: resource.name, resource })),
      ...(body.prefixes ?? []).map((name) => ({ name })),
    ];
    const visible = entries.filter((entry) => {
      if (entry.name.startsWith(this.uploadPrefix)) return false;
      if (position === undefined) return true;
      if (compareUtf8(entry.name, position.after) <= 0) return false;
      return !(position.isPrefix && entry.name.startsWith(position.after));
    });
    visible.sort((left, right) => compareUtf8(left.name, right.name));
    return visible;
  }

  // ---------------------------------------------------------------------------
  // Single objects

  async head(key: string, options: SignalOption = {}): Promise<ObjectInfo> {
    const context: GcsErrorContext = { operation: 'head', bucket: this.bucket, key };
    return infoOf(await this.getResource(context, key, options.signal));
  }

  async get(key: string, request: GetRequest = {}): Promise<GetResult> {
    const context: GcsErrorContext = { operation: 'get', bucket: this.bucket, key };
    this.throwIfAborted(context, request.signal);

    const range = request.range;
    if (range !== undefined) {
      const { start, end } = range;
      if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
        throw new InvalidRequestError(`invalid byte range ${start}-${end}: expected integers with 0 <= start <= end`, { ...context, serviceCode: 'InvalidArgument' });
      }
      if (start === end) {
        // HTTP has no empty byte range, so an empty read checks the object with a metadata request.
        const resource = await this.getResource(context, key, request.signal, request.ifVersion);
        return { info: infoOf(resource), body: Buffer.alloc(0) };
      }
    }

    return this.send(context, request.signal, () => this.download(context, key, request));
  }

  /** Downloads an object or a range of it, checking the generation and the body length of the response. */
  private async download(context: GcsErrorContext, key: string, request: GetRequest): Promise<GetResult> {
    const qs: Record<string, string> = { alt: 'media' };
    if (request.ifVersion !== undefined) qs.ifGenerationMatch = request.ifVersion;
    const headers: Record<string, string> = {
      // Ask for the stored bytes: without gzip in Accept-Encoding, GCS decompresses gzip-encoded objects and the size no longer matches.
      'Accept-Encoding': 'gzip',
      'Cache-Control': 'no-store',
    };
    if (request.range !== undefined) headers.Range = `bytes=${request.range.start}-${request.range.end - 1}`;

    const { status, headers: responseHeaders, body, pieces } = await this.requestMedia(key, qs, headers, request.signal, request.pieces === true);
    const receivedLength = bodyLength({ body, pieces });

    if (status < 200 || status > 299) {
      throw this.httpError(status, body, responseHeaders);
    }

    const generation = responseHeaders['x-goog-generation'];
    if (request.ifVersion !== undefined && generation !== request.ifVersion) {
      throw new PreconditionFailedError(`object ${key} in bucket ${this.bucket} changed: GCS returned generation ${String(generation)}, not the pinned ${request.ifVersion}`, {
        ...context,
        httpStatus: status,
        serviceCode: 'conditionNotMet',
      });
    }

    // 206 carries "bytes FIRST-LAST/TOTAL"; a 200 carries the whole object.
    let totalSize: number;
    let bodyStart = 0;
    let expectedLength: number;
    if (status === 206) {
      const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(responseHeaders['content-range'] ?? '');
      if (match === null) {
        throw new TransientError(`GCS returned a ranged read of ${key} without a valid Content-Range header (${String(responseHeaders['content-range'])})`, { ...context, httpStatus: status });
      }
      bodyStart = Number(match[1]);
      expectedLength = Number(match[2]) - bodyStart + 1;
      totalSize = Number(match[3]);
    } else {
      totalSize = Number(responseHeaders['x-goog-stored-content-length'] ?? responseHeaders['content-length'] ?? receivedLength);
      expectedLength = totalSize;
    }
    if (receivedLength !== expectedLength) {
      throw new TransientError(`GCS sent ${receivedLength} bytes of ${key} where ${expectedLength} were announced: the body was truncated`, {
        ...context,
        httpStatus: status,
        serviceCode: 'IncompleteBody',
      });
    }

    const info: ObjectInfo = {
      key,
      size: totalSize,
      version: String(generation ?? ''),
      lastModified: new Date(responseHeaders['last-modified'] ?? 0),
    };

    if (request.range !== undefined) {
      // A server may ignore the Range header and send the whole object; cut the range out here.
      const from = request.range.start - bodyStart;
      const to = Math.min(request.range.end, totalSize) - bodyStart;
      if (from !== 0 || to !== receivedLength) {
        const whole = pieces === undefined ? body : Buffer.concat(pieces);
        return { info, body: whole.subarray(Math.max(from, 0), Math.max(to, 0)) };
      }
    }
    return pieces === undefined ? { info, body } : { info, body: EMPTY_BODY, pieces };
  }

  /**
   * Sends one media download with undici and collects the body.
   *
   * The storage client's requestStream is not used here, because its
   * transport (node-fetch 2.7 under teeny-request) pipes the response into a
   * PassThrough that never ends when the connection closes before
   * Content-Length bytes arrived, so a truncated download would hang until
   * the caller gives up. undici reports that case as an error (UND_ERR_SOCKET),
   * which becomes a TransientError. It also delivers the body as views of the
   * socket's reads, where node:http's parser copies every chunk. Retries
   * happen in the read path (`getWithRetry`) and, after a 401, in `send`.
   */
  private async requestMedia(
    key: string,
    query: Record<string, string>,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    keepPieces: boolean,
  ): Promise<{ status: number; headers: Record<string, string | undefined>; body: Buffer; pieces?: Buffer[] }> {
    let accessToken: string;
    try {
      accessToken = (await this.credentials.current(signal)).accessToken;
    } catch (error) {
      throw new AccessTokenUnavailableError((error as Error).message, { cause: error });
    }

    const url = new URL(`${this.apiEndpoint}/storage/v1/b/${encodeURIComponent(this.bucket)}/o/${encodeURIComponent(key)}`);
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);

    // A connection that receives no headers or no body bytes for this long fails and is retried by the read path.
    this.mediaConnections ??= new Agent(agentOptions({ connections: 64, idleTimeoutMs: this.downloadIdleTimeoutMs }));

    let response: Dispatcher.ResponseData;
    try {
      response = await this.mediaConnections.request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: 'GET',
        headers: { ...headers, Authorization: `Bearer ${accessToken}` },
        signal,
      });
    } catch (error) {
      throw abortedOr(error, signal);
    }

    // With a Content-Length, the chunks are copied into one buffer of that size as they arrive, so a
    // block's bytes are not held twice (chunks and their concatenation) while the last ones arrive.
    // The length check of a successful response is left to the caller, which has the requested range.
    // With `keepPieces`, a successful response keeps its chunks as they are: no copy at all.
    const status = response.statusCode;
    const responseHeaders = singleValued(response.headers);
    const successful = status >= 200 && status <= 299;
    const announced = Number(responseHeaders['content-length']);
    const preallocated = !(keepPieces && successful) && Number.isSafeInteger(announced) && announced > 0 ? Buffer.allocUnsafe(announced) : undefined;
    const chunks: Buffer[] = [];
    let received = 0;

    await new Promise<void>((resolve, reject) => {
      response.body.on('data', (chunk: Buffer) => {
        if (preallocated !== undefined && received + chunk.length <= preallocated.length) preallocated.set(chunk, received);
        else chunks.push(chunk);
        received += chunk.length;
      });
      response.body.on('error', (error: Error) => reject(abortedOr(error, signal)));
      response.body.on('end', resolve);
    });

    if (keepPieces && successful) return { status, headers: responseHeaders, body: EMPTY_BODY, pieces: chunks };
    if (preallocated === undefined) return { status, headers: responseHeaders, body: Buffer.concat(chunks) };
    if (chunks.length === 0) return { status, headers: responseHeaders, body: preallocated.subarray(0, received) };
    return { status, headers: responseHeaders, body: Buffer.concat([preallocated, ...chunks]) };
  }

  /** Builds an error object shaped like the storage client's ApiError from a raw response. */
  private httpError(status: number, body: Buffer, headers: Record<string, string | undefined>): unknown {
    let errors: unknown[] = [];
    let message = `HTTP ${status}`;
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { error?: { message?: string; errors?: unknown[] } };
      errors = parsed.error?.errors ?? [];
      message = parsed.error?.message ?? message;
    } catch {
      // 416 responses carry an XML body, so the status alone decides.
    }
    return Object.assign(new Error(message), { code: status, errors, response: { statusCode: status, headers } });
  }

  async put(key: string, body: Buffer, request: PutRequest = {}): Promise<ObjectInfo> {
    const context: GcsErrorContext = { operation: 'put', bucket: this.bucket, key, bucketLevel: true };
    this.throwIfAborted(context, request.signal);
    this.validateKey(context, key);
    if (body.length > this.limits.maxSingleRequestSize) {
      throw new InvalidRequestError(`object ${key} of ${body.length} bytes exceeds the single-request limit of ${this.limits.maxSingleRequestSize} bytes: use a multipart upload`, {
        ...context,
        serviceCode: 'EntityTooLarge',
      });
    }

    const resource = await this.upload(context, key, body, {
      contentType: request.contentType,
      ifGenerationMatch: request.ifNoneMatch === true ? 0 : undefined,
      signal: request.signal,
    });
    return infoOf(resource);
  }

  /** Writes an object in one request (no resumable session) and returns its resource. */
  private async upload(
    context: GcsErrorContext,
    key: string,
    body: Buffer,
    options: { contentType?: string; metadata?: Record<string, string>; ifGenerationMatch?: number; signal?: AbortSignal },
  ): Promise<ObjectResource> {
    try {
      return await this.uploadOnce(context, key, body, options);
    } catch (error) {
      if (!(error instanceof PreconditionFailedError) || options.ifGenerationMatch !== 0) throw error;

      // The client repeats a create whose response was lost, and the repeat
      // fails its ifGenerationMatch=0 precondition. An object with this body
      // and metadata means that an earlier attempt created it.
      // NOTE: the client does not report its attempts, so an identical object
      // written by another client at the same moment also counts as created here.
      const existing = await this.getResource({ ...context, key }, key, options.signal).catch(() => undefined);
      const expectedMd5 = createHash('md5').update(body).digest('base64');
      const sameMetadata = Object.entries(options.metadata ?? {}).every(([name, value]) => existing?.metadata?.[name] === value);
      if (existing === undefined || existing.md5Hash !== expectedMd5 || Number(existing.size) !== body.length || !sameMetadata) throw error;
      this.logger?.info({ bucket: this.bucket, key, generation: existing.generation }, 'conditional create was answered 412 on a retry, but the object holds this body: an earlier attempt created it');
      return existing;
    }
  }

  private async uploadOnce(
    context: GcsErrorContext,
    key: string,
    body: Buffer,
    options: { contentType?: string; metadata?: Record<string, string>; ifGenerationMatch?: number; signal?: AbortSignal },
  ): Promise<ObjectResource> {
    return this.send(context, options.signal, async () => {
      const file = this.bucketHandle.file(key);
      await file.save(body, {
        resumable: false,
        // Parts and small objects are held in memory, so an MD5 of the whole body is cheap and GCS checks it.
        validation: 'md5',
        metadata: {
          contentType: options.contentType ?? 'application/octet-stream',
          ...(options.metadata === undefined ? {} : { metadata: options.metadata }),
        },
        ...(options.ifGenerationMatch === undefined ? {} : { preconditionOpts: { ifGenerationMatch: options.ifGenerationMatch } }),
      });
      return file.metadata as ObjectResource;
    });
  }

  /** Fetches an object's resource; with `ifVersion`, fails unless it still has that generation. */
  private async getResource(context: GcsErrorContext, key: string, signal: AbortSignal | undefined, ifVersion?: string): Promise<ObjectResource> {
    this.throwIfAborted(context, signal);
    const qs: Record<string, string> = { projection: 'noAcl' };
    if (ifVersion !== undefined) qs.ifGenerationMatch = ifVersion;

    const { body } = await this.send(context, signal, () => requestJson<ObjectResource>(this.bucketHandle.file(key), { uri: '', qs }));
    if (ifVersion !== undefined && String(body.generation) !== ifVersion) {
      throw new PreconditionFailedError(`object ${key} in bucket ${this.bucket} changed: its generation is ${String(body.generation)}, not the pinned ${ifVersion}`, {
        ...context,
        httpStatus: 200,
        serviceCode: 'conditionNotMet',
      });
    }
    return body;
  }

  // ---------------------------------------------------------------------------
  // Copy and delete

  async copy(sourceKey: string, destinationKey: string, request: CopyRequest = {}): Promise<ObjectInfo> {
    const context: GcsErrorContext = { operation: 'copy', bucket: this.bucket, key: destinationKey };
    this.throwIfAborted(context, request.signal);
    this.validateKey(context, destinationKey);

    const qs: Record<string, string> = {};
    if (request.ifSourceVersion !== undefined) {
      qs.sourceGeneration = request.ifSourceVersion;
      qs.ifSourceGenerationMatch = request.ifSourceVersion;
    }

    try {
      return await this.send({ ...context, key: sourceKey }, request.signal, async () => {
        // Rewrite copies large objects in several calls, and each response carries the token of the next call.
        let rewriteToken: string | undefined;
        for (;;) {
          const { body } = await requestJson<{ done?: boolean; rewriteToken?: string; resource?: ObjectResource }>(this.bucketHandle.file(sourceKey), {
            method: 'POST',
            uri: `/rewriteTo/b/${encodeURIComponent(this.bucket)}/o/${encodeURIComponent(destinationKey)}`,
            qs: rewriteToken === undefined ? qs : { ...qs, rewriteToken },
            json: {},
          });
          if (body.done === true && body.resource !== undefined) return infoOf(body.resource);
          if (body.rewriteToken === undefined) {
            throw new TransientError(`GCS returned neither a result nor a rewrite token for the rewrite of ${sourceKey} to ${destinationKey}`, context);
          }
          rewriteToken = body.rewriteToken;
        }
      });
    } catch (error) {
      if (error instanceof NotFoundError && request.ifSourceVersion !== undefined) {
        // The pinned generation is gone: the source was either replaced or deleted.
        const current = await this.head(sourceKey, { signal: request.signal });
        throw new PreconditionFailedError(`copy source ${sourceKey} in bucket ${this.bucket} changed: its generation is ${current.version}, not the pinned ${request.ifSourceVersion}`, {
          ...context,
          key: sourceKey,
          httpStatus: error.httpStatus,
          serviceCode: 'conditionNotMet',
          cause: error,
        });
      }
      throw error;
    }
  }

  async delete(key: string, options: SignalOption = {}): Promise<void> {
    const context: GcsErrorContext = { operation: 'delete', bucket: this.bucket, key };
    this.throwIfAborted(context, options.signal);
    try {
      await this.send(context, options.signal, () => requestJson(this.bucketHandle.file(key), { method: 'DELETE', uri: '' }));
    } catch (error) {
      // Deleting a missing key succeeds, as on S3. A missing bucket also returns 404 here and is not reported.
      if (error instanceof NotFoundError || error instanceof NoSuchBucketError) return;
      throw error;
    }
  }

  async deleteMany(keys: string[], options: SignalOption = {}): Promise<void> {
    this.throwIfAborted({ operation: 'deleteMany', bucket: this.bucket }, options.signal);
    await forEachLimited(keys, this.deleteConcurrency, (key) => this.delete(key, options));
  }

  // ---------------------------------------------------------------------------
  // Multipart uploads through compose

  async createMultipartUpload(key: string, options: SignalOption & { contentType?: string } = {}): Promise<string> {
    const context: GcsErrorContext = { operation: 'createMultipartUpload', bucket: this.bucket, key, bucketLevel: true };
    this.throwIfAborted(context, options.signal);
    this.validateKey(context, key);

    const uploadId = randomBytes(16).toString('hex');
    const metadata: Record<string, string> = { [KEY_METADATA]: key };
    if (options.contentType !== undefined) metadata[CONTENT_TYPE_METADATA] = options.contentType;
    await this.upload(context, this.markerName(uploadId), Buffer.alloc(0), { metadata, ifGenerationMatch: 0, signal: options.signal });
    return uploadId;
  }

  async uploadPart(key: string, uploadId: string, partNumber: number, body: Buffer, options: SignalOption = {}): Promise<CompletedPart> {
    const context: GcsErrorContext = { operation: 'uploadPart', bucket: this.bucket, key };
    this.throwIfAborted(context, options.signal);

    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > this.limits.maxParts) {
      throw new InvalidRequestError(`invalid part number ${partNumber}: expected an integer from 1 to ${this.limits.maxParts}`, { ...context, serviceCode: 'InvalidArgument' });
    }
    if (body.length > this.limits.maxPartSize) {
      throw new InvalidRequestError(`part ${partNumber} of ${body.length} bytes exceeds the part size limit of ${this.limits.maxPartSize} bytes`, {
        ...context,
        serviceCode: 'EntityTooLarge',
      });
    }

    // The marker is checked on every part, so that a part of an aborted upload fails instead of leaking.
    await this.uploadMarker(context, key, uploadId, options.signal);
    const resource = await this.upload(context, this.partName(uploadId, partNumber), body, {
      metadata: { [KEY_METADATA]: key },
      signal: options.signal,
    });
    return { partNumber, etag: String(resource.generation) };
  }

  async completeMultipartUpload(key: string, uploadId: string, parts: CompletedPart[], options: SignalOption = {}): Promise<ObjectInfo> {
    const context: GcsErrorContext = { operation: 'completeMultipartUpload', bucket: this.bucket, key };
    this.throwIfAborted(context, options.signal);
    const marker = await this.uploadMarker(context, key, uploadId, options.signal);

    if (parts.length === 0) {
      throw new InvalidRequestError(`cannot complete upload ${uploadId} of ${key} with no parts: upload at least one part`, { ...context, serviceCode: 'MalformedXML' });
    }
    for (const [index, part] of parts.entries()) {
      const previous = parts[index - 1];
      if (previous !== undefined && part.partNumber <= previous.partNumber) {
        throw new InvalidRequestError(`parts of upload ${uploadId} are not in ascending order: part ${part.partNumber} follows part ${previous.partNumber}`, {
          ...context,
          serviceCode: 'InvalidPartOrder',
        });
      }
    }

    const uploaded = new Map<string, ObjectResource>();
    for (const resource of await this.listAll(context, `${this.uploadDirectory(uploadId)}part-`, options.signal)) {
      uploaded.set(resource.name, resource);
    }
    const sources: ObjectResource[] = [];
    for (const [index, part] of parts.entries()) {
      const stored = uploaded.get(this.partName(uploadId, part.partNumber));
      if (stored === undefined || String(stored.generation) !== stripQuotes(part.etag)) {
        throw new InvalidRequestError(`part ${part.partNumber} of upload ${uploadId} was not uploaded or has a different ETag than ${part.etag}`, {
          ...context,
          serviceCode: 'InvalidPart',
        });
      }
      const isLast = index === parts.length - 1;
      if (!isLast && Number(stored.size) < this.limits.minPartSize) {
        throw new InvalidRequestError(
          `part ${part.partNumber} of upload ${uploadId} has ${String(stored.size)} bytes, below the minimum part size of ${this.limits.minPartSize} bytes for every part but the last`,
          { ...context, serviceCode: 'EntityTooSmall' },
        );
      }
      sources.push(stored);
    }

    const contentType = marker.metadata?.[CONTENT_TYPE_METADATA];
    let composed: ObjectResource;
    try {
      composed = await this.composeTree(context, uploadId, key, sources, contentType, options.signal);
    } catch (error) {
      // The parts stay, so that the caller can retry the completion or abort, as after a failed completion on S3.
      await this.removeUploadObjects(context, uploadId, `${this.uploadDirectory(uploadId)}compose-`);
      throw error;
    }
    await this.removeUploadObjects(context, uploadId, this.uploadDirectory(uploadId));
    return infoOf(composed);
  }

  async abortMultipartUpload(key: string, uploadId: string, options: SignalOption = {}): Promise<void> {
    const context: GcsErrorContext = { operation: 'abortMultipartUpload', bucket: this.bucket, key };
    this.throwIfAborted(context, options.signal);
    if (!UPLOAD_ID_PATTERN.test(uploadId)) throw this.noSuchUpload(context, uploadId);

    const objects = await this.listAll(context, this.uploadDirectory(uploadId), options.signal);
    if (objects.length === 0 || objects.some((object) => object.metadata?.[KEY_METADATA] !== key)) {
      throw this.noSuchUpload(context, uploadId);
    }
    await this.removeUploadObjects(context, uploadId, this.uploadDirectory(uploadId), objects);
  }

  async listMultipartUploads(prefix: string, options: SignalOption = {}): Promise<MultipartUploadInfo[]> {
    const context: GcsErrorContext = { operation: 'listMultipartUploads', bucket: this.bucket, bucketLevel: true };
    this.throwIfAborted(context, options.signal);

    const uploads = new Map<string, MultipartUploadInfo>();
    for (const resource of await this.listAll(context, this.uploadPrefix, options.signal)) {
      const uploadId = resource.name.slice(this.uploadPrefix.length).split('/')[0] ?? '';
      const key = resource.metadata?.[KEY_METADATA];
      if (!UPLOAD_ID_PATTERN.test(uploadId) || key === undefined || !key.startsWith(prefix)) continue;

      const created = new Date(resource.timeCreated ?? resource.updated ?? 0);
      const known = uploads.get(uploadId);
      if (known === undefined) uploads.set(uploadId, { key, uploadId, initiated: created });
      else if (created < known.initiated) known.initiated = created;
    }

    return [...uploads.values()].sort((left, right) => compareUtf8(left.key, right.key) || left.initiated.getTime() - right.initiated.getTime());
  }

  /**
   * Composes `sources` into `key`, through intermediate composites of at most
   * 32 sources each when there are more than 32.
   */
  private async composeTree(
    context: GcsErrorContext,
    uploadId: string,
    key: string,
    sources: ObjectResource[],
    contentType: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<ObjectResource> {
    let level = 0;
    let current = sources;
    while (current.length > MAX_COMPOSE_SOURCES) {
      level += 1;
      const groups: ObjectResource[][] = [];
      for (let index = 0; index < current.length; index += MAX_COMPOSE_SOURCES) groups.push(current.slice(index, index + MAX_COMPOSE_SOURCES));

      const next: ObjectResource[] = new Array<ObjectResource>(groups.length);
      // Four composes at a time: each is a server-side copy, so more in flight gains little.
      await forEachLimited(groups, 4, async (group, index) => {
        next[index] = await this.compose(context, `${this.uploadDirectory(uploadId)}compose-${level}-${String(index).padStart(5, '0')}`, group, undefined, signal);
      });
      current = next;
    }
    return this.compose(context, key, current, contentType, signal);
  }

  private async compose(
    context: GcsErrorContext,
    destination: string,
    sources: ObjectResource[],
    contentType: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<ObjectResource> {
    const json = {
      kind: 'storage#composeRequest',
      // The generation pins each source, so a part replaced after validation cannot slip in.
      sourceObjects: sources.map((source) => ({ name: source.name, generation: String(source.generation) })),
      destination: { contentType: contentType ?? 'application/octet-stream' },
    };
    const { body } = await this.send(context, signal, () => requestJson<ObjectResource>(this.bucketHandle.file(destination), { method: 'POST', uri: '/compose', json }));
    return body;
  }

  /**
   * Deletes the objects of one upload under `prefix`, the marker first when
   * it is among them. Failures are logged and raised only by an abort, whose
   * whole purpose is the deletion.
   */
  private async removeUploadObjects(context: GcsErrorContext, uploadId: string, prefix: string, known?: ObjectResource[]): Promise<void> {
    const marker = this.markerName(uploadId);
    try {
      const objects = known ?? (await this.listAll(context, prefix, undefined));
      const names = objects.map((object) => object.name);
      if (names.includes(marker)) await this.delete(marker);
      await forEachLimited(
        names.filter((name) => name !== marker),
        this.deleteConcurrency,
        (name) => this.delete(name),
      );
    } catch (error) {
      // The objects stay listed by listMultipartUploads, so a later abort can remove them.
      this.logger?.warn({ err: error, bucket: this.bucket, uploadId, operation: context.operation }, 'failed to delete the temporary objects of a multipart upload');
      if (context.operation === 'abortMultipartUpload') throw storeErrorFromGcs(error, context);
    }
  }

  /** Returns the upload's marker resource, or rejects with NotFound when the upload does not exist for `key`. */
  private async uploadMarker(context: GcsErrorContext, key: string, uploadId: string, signal: AbortSignal | undefined): Promise<ObjectResource> {
    if (!UPLOAD_ID_PATTERN.test(uploadId)) throw this.noSuchUpload(context, uploadId);
    let marker: ObjectResource;
    try {
      marker = await this.getResource({ ...context, key: this.markerName(uploadId) }, this.markerName(uploadId), signal);
    } catch (error) {
      if (error instanceof NotFoundError) throw this.noSuchUpload(context, uploadId, error);
      throw error;
    }
    if (marker.metadata?.[KEY_METADATA] !== key) throw this.noSuchUpload(context, uploadId);
    return marker;
  }

  private noSuchUpload(context: GcsErrorContext, uploadId: string, cause?: unknown): NotFoundError {
    return new NotFoundError(`multipart upload ${uploadId} of ${String(context.key)} not found in bucket ${this.bucket}: it was completed, aborted or never created`, {
      ...context,
      httpStatus: 404,
      serviceCode: 'NoSuchUpload',
      cause,
    });
  }

  /** Lists every object under `prefix`, following page tokens, including the upload prefix. */
  private async listAll(context: GcsErrorContext, prefix: string, signal: AbortSignal | undefined): Promise<ObjectResource[]> {
    const resources: ObjectResource[] = [];
    let pageToken: string | undefined;
    do {
      const qs: Record<string, string | number> = { prefix, maxResults: GCS_MAX_LIST_RESULTS, projection: 'noAcl' };
      if (pageToken !== undefined) qs.pageToken = pageToken;
      const { body } = await this.send({ ...context, bucketLevel: true }, signal, () => requestJson<ListResponseBody>(this.bucketHandle, { uri: '/o', qs }));
      resources.push(...(body.items ?? []));
      pageToken = body.nextPageToken;
    } while (pageToken !== undefined);
    return resources;
  }

  private uploadDirectory(uploadId: string): string {
    return `${this.uploadPrefix}${uploadId}/`;
  }

  private markerName(uploadId: string): string {
    return `${this.uploadDirectory(uploadId)}upload`;
  }

  private partName(uploadId: string, partNumber: number): string {
    return `${this.uploadDirectory(uploadId)}part-${String(partNumber).padStart(5, '0')}`;
  }

  // ---------------------------------------------------------------------------
  // Request plumbing

  /**
   * Runs one request: rejects at once when `signal` aborts, maps failures to
   * StoreErrors, and after a 401 renews the token once and repeats the request.
   */
  private async send<T>(context: GcsErrorContext, signal: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> {
    for (let retried = false; ; retried = true) {
      this.throwIfAborted(context, signal);
      try {
        return await raceAbort(attempt(), signal);
      } catch (raw) {
        let error = storeErrorFromGcs(raw, context);
        if (error instanceof NotFoundError && context.bucketLevel !== true && !this.bucketConfirmed && httpStatusOf(raw) === 404) {
          error = await this.bucketMissingOr(error, context);
        }
        if (!(error instanceof InvalidCredentialsError) || retried || raw instanceof AccessTokenUnavailableError) throw error;

        this.logger?.info({ bucket: this.bucket, key: context.key, operation: context.operation }, 'GCS rejected the access token; renewing it and retrying once');
        try {
          await this.credentials.invalidate(`GCS returned HTTP 401 for ${context.operation}`);
        } catch (renewal) {
          throw new InvalidCredentialsError(`${error.message}; renewing the token failed: ${(renewal as Error).message}`, { ...context, httpStatus: 401, cause: renewal });
        }
        this.onRetry?.();
      }
    }
  }

  /**
   * Tells a missing object from a missing bucket after a 404, with one listing
   * of at most one key (objects.list needs only the permissions every reader
   * has). The store remembers once the bucket is seen to exist.
   */
  private async bucketMissingOr(error: NotFoundError, context: GcsErrorContext): Promise<StoreError> {
    try {
      await requestJson(this.bucketHandle, { uri: '/o', qs: { maxResults: 1, projection: 'noAcl' } });
      this.bucketConfirmed = true;
      return error;
    } catch (listError) {
      const mapped = storeErrorFromGcs(listError, { ...context, bucketLevel: true });
      return mapped instanceof NoSuchBucketError ? mapped : error;
    }
  }

  private throwIfAborted(context: GcsErrorContext, signal: AbortSignal | undefined): void {
    if (signal?.aborted === true) {
      throw new AbortedError(`${context.operation} on bucket ${this.bucket} was aborted before it started`, { ...context, cause: signal.reason });
    }
  }

  private validateKey(context: GcsErrorContext, key: string): void {
    const length = Buffer.byteLength(key, 'utf8');
    if (length === 0 || length > MAX_KEY_BYTES) {
      throw new InvalidRequestError(`invalid object name of ${length} bytes: GCS object names have 1 to ${MAX_KEY_BYTES} bytes of UTF-8`, {
        ...context,
        serviceCode: 'invalid',
      });
    }
  }
}
