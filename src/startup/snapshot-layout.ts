/**
 * Paths of the start-up snapshot's files, relative to the repository root.
 * The launcher script `src/startup/bucketmount` repeats these names.
 */

export const SNAPSHOT_DIRECTORY = 'dist/snapshot';

/** The bundle of snapshot-entry.ts and the modules it loads, run once to make the snapshot. */
export const BUNDLE_FILE = 'bucketmount.cjs';

/** The snapshot, passed to `node --snapshot-blob`. */
export const BLOB_FILE = 'bucketmount.blob';

/**
 * Size and modification time (`stat -c '%s %Y'`) of the Node.js binary that
 * made the snapshot. Node refuses a snapshot made by another binary, so the
 * launcher uses the snapshot only when the binary it runs matches.
 */
export const NODE_STAMP_FILE = 'node-stamp';

/** Global through which the bundle's `import.meta.url` is the bundle's own location, also after it is moved. */
export const BUNDLE_URL_GLOBAL = 'bucketmountBundleUrl';
