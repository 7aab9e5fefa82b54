/**
 * Locations of the cached test servers that test/env/install.sh builds.
 */

import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export type ServerName = 'minio' | 'fake-gcs-server';

/** Returns the cache directory: `$BUCKETMOUNT_CACHE_DIR`, or `~/.cache/bucketmount`. */
export function cacheDir(): string {
  const configured = process.env.BUCKETMOUNT_CACHE_DIR;
  if (configured !== undefined && configured !== '') {
    return configured;
  }
  return join(homedir(), '.cache', 'bucketmount');
}

/**
 * Returns the path of a server binary in the cache, and throws an error that
 * names the install script when the binary is missing or not executable.
 */
export function serverBinary(name: ServerName): string {
  const path = join(cacheDir(), 'bin', name);
  try {
    accessSync(path, constants.X_OK);
  } catch (error) {
    throw new Error(`test server binary ${path} is missing or not executable; run test/env/install.sh to build it`, {
      cause: error,
    });
  }
  return path;
}
