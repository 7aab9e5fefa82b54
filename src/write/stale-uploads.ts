/**
 * Cleanup, in the background once a mount is ready, of incomplete multipart uploads that earlier
 * daemons left behind.
 *
 * A daemon that is killed (SIGKILL, OOM kill, node failure) while a file is
 * being written leaves its multipart upload in the bucket: nothing is visible
 * under the file's name, but the uploaded parts stay stored and billed until
 * someone aborts the upload. On S3 these are multipart uploads; on GCS they
 * are the compose parts under the store's upload prefix
 * (`.bucketmount-uploads/`), which `listMultipartUploads` reports the same way.
 *
 * Only uploads under the mounted prefix and initiated more than `maxAge` ago
 * are aborted. The age threshold protects the uploads of other daemons that
 * mount the same bucket at the same time and are still writing: their
 * uploads look exactly like abandoned ones, and an upload is only ever older
 * than the threshold when its writer has kept a file open for that long.
 * Set the threshold above the longest write any writer of the bucket may
 * take. A bucket lifecycle rule (`AbortIncompleteMultipartUpload` on S3)
 * does the same job server-side and also covers buckets that are no longer
 * mounted.
 *
 * The cleanup never fails the mount: a failed listing or abort is logged,
 * and the rest is left for the next start or the lifecycle rule.
 */

import type { Logger } from 'pino';

import { NotFoundError } from '../store/errors.js';
import type { ObjectStore } from '../store/types.js';

export interface StaleUploadCleanupOptions {
  store: ObjectStore;
  /** Key prefix of the mount: '' or ending with '/'. */
  prefix: string;
  /** Uploads initiated at least this long ago are aborted, in milliseconds. */
  maxAgeMs: number;
  logger: Logger;
  now?: () => number;
  signal?: AbortSignal;
}

export interface StaleUploadCleanupResult {
  /** Incomplete uploads found under the prefix. */
  found: number;
  aborted: number;
  /** Uploads younger than the threshold, left for their writers. */
  kept: number;
  failed: number;
}

/** Aborts incomplete multipart uploads under `prefix` older than `maxAgeMs`; never rejects. */
export async function abortStaleUploads(options: StaleUploadCleanupOptions): Promise<StaleUploadCleanupResult> {
  const { store, prefix, maxAgeMs, logger } = options;
  const now = options.now ?? Date.now;
  const result: StaleUploadCleanupResult = { found: 0, aborted: 0, kept: 0, failed: 0 };

  let uploads;
  try {
    uploads = await store.listMultipartUploads(prefix, { signal: options.signal });
  } catch (error) {
    logger.warn({ bucket: store.bucket, prefix, err: error }, 'could not list incomplete multipart uploads; stale uploads are left for the next start or a bucket lifecycle rule');
    return result;
  }
  result.found = uploads.length;

  const cutoff = now() - maxAgeMs;
  for (const upload of uploads) {
    if (upload.initiated.getTime() > cutoff) {
      result.kept += 1;
      continue;
    }
    try {
      await store.abortMultipartUpload(upload.key, upload.uploadId, { signal: options.signal });
      result.aborted += 1;
      logger.info({ bucket: store.bucket, key: upload.key, uploadId: upload.uploadId, initiated: upload.initiated.toISOString() }, 'aborted a stale incomplete multipart upload');
    } catch (error) {
      if (error instanceof NotFoundError) {
        // Another daemon's cleanup or the writer itself got there first.
        result.aborted += 1;
        continue;
      }
      result.failed += 1;
      logger.warn({ bucket: store.bucket, key: upload.key, uploadId: upload.uploadId, err: error }, 'could not abort a stale incomplete multipart upload');
    }
  }

  logger.info({ bucket: store.bucket, prefix, maxAgeSeconds: Math.round(maxAgeMs / 1000), ...result }, 'checked for stale incomplete multipart uploads');
  return result;
}
