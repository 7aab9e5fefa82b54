/**
 * Warm-ups run while a start-up snapshot is built (see warmUpWhileBuilding
 * in snapshot-main.ts). They run the code that every mount runs before it is
 * ready, so that its functions are compiled into the snapshot. Otherwise the
 * daemon compiles them on its main thread while the mount waits.
 */

import { closeSync, openSync } from 'node:fs';

import { parseMountArguments } from '../cli/config.js';
import { createLogger } from '../observability/logger.js';

/** The endpoint of every warm-up client and command line. Nothing is sent there. */
export const UNUSED_ENDPOINT = 'http://127.0.0.1:9';

/** A mount command line of each cloud, with made-up values. Nothing reads the files or endpoints they name. */
export const WARM_UP_ARGUMENTS = {
  s3: [
    's3://warm-up/prefix', '/warm-up',
    '--endpoint', UNUSED_ENDPOINT, '--sts-endpoint', UNUSED_ENDPOINT, '--region', 'us-east-1',
    '--token-file', '/warm-up/token', '--role-arn', 'arn:aws:iam::000000000000:role/warm-up',
  ],
  gcs: [
    'gs://warm-up/prefix', '/warm-up',
    '--endpoint', UNUSED_ENDPOINT, '--token-file', '/warm-up/token',
    '--gcp-wif-provider', 'projects/1/locations/global/workloadIdentityPools/warm-up/providers/warm-up',
    '--gcp-service-account', 'warm-up@warm-up.iam.gserviceaccount.com',
    '--gcp-sts-endpoint', `${UNUSED_ENDPOINT}/v1/token`, '--gcp-iam-endpoint', UNUSED_ENDPOINT,
  ],
};

/**
 * Parses `argv` as a mount command line and logs the lines a start logs,
 * with a child logger and an error, to /dev/null. The descriptor is closed
 * again, because a snapshot cannot hold open files.
 */
export function warmUpMountStart(argv: string[]): void {
  const config = parseMountArguments(argv, {});

  const devNull = openSync('/dev/null', 'w');
  try {
    const logger = createLogger('info', devNull);
    logger.info({ event: 'mount-starting', url: config.location.url, mountpoint: config.mountpoint, startup: 'snapshot' }, `mounting ${config.location.url} at ${config.mountpoint}`);
    const child = logger.child({ component: 'credentials' });
    child.info({ expiration: new Date(), lifetimeSeconds: 3600, accessToken: 'redacted by the logger' }, 'credentials renewed');
    child.warn({ err: new Error('warm-up') }, 'a warning with an error');
    logger.flush();
  } finally {
    closeSync(devNull);
  }
}
