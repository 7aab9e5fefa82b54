/**
 * Paths of the start-up snapshots' files, relative to the repository root.
 * The launcher script `src/startup/bucketmount` repeats these names.
 */

import { basename } from 'node:path';

export const SNAPSHOT_DIRECTORY = 'dist/snapshot';

/** The clouds with a snapshot each; the launcher picks GCS when an argument starts with gs://. */
export const SNAPSHOT_CLOUDS = ['s3', 'gcs'] as const;
export type SnapshotCloud = (typeof SNAPSHOT_CLOUDS)[number];

/** Returns the file name of the snapshot of `cloud`, which the launcher passes to `node --snapshot-blob`. */
export function blobFileOf(cloud: SnapshotCloud): string {
  return `bucketmount-${cloud}.blob`;
}

/** Returns the file name of the bundle that made the snapshot `blob` (a path or a file name): the blob's name, ending in .cjs. */
export function bundleFileOf(blob: string): string {
  return basename(blob).replace(/\.blob$/, '.cjs');
}

/**
 * Size and modification time (`stat -c '%s %Y'`) of the Node.js binary that
 * made the snapshots. Node refuses a snapshot made by another binary, so the
 * launcher uses a snapshot only when the binary it runs matches.
 */
export const NODE_STAMP_FILE = 'node-stamp';

/** Global through which the bundle's `import.meta.url` is the bundle's own location, also after it is moved. */
export const BUNDLE_URL_GLOBAL = 'bucketmountBundleUrl';
