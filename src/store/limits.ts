/**
 * Limits of Amazon S3 that the stores share, from the S3 user guide
 * ("Amazon S3 multipart upload limits" and the ListObjectsV2 reference).
 */

import type { StoreLimits } from './types.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export const S3_LIMITS: StoreLimits = Object.freeze({
  minPartSize: 5 * MiB,
  maxPartSize: 5 * GiB,
  maxParts: 10_000,
  maxSingleRequestSize: 5 * GiB,
});

/** Largest page that ListObjectsV2 returns, whatever `MaxKeys` requests. */
export const S3_MAX_LIST_KEYS = 1000;

/** Most keys one DeleteObjects request accepts. */
export const S3_MAX_DELETE_KEYS = 1000;
