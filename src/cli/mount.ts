/**
 * `bucketmount mount URL MOUNTPOINT`: serves one bucket location at a mount
 * point in the foreground.
 *
 * Start-up order: validate options, get the first credentials, probe the
 * bucket with one listing (so a wrong bucket or endpoint fails here, with a
 * clear message, and not as EIO on the first `ls`), then mount. Each failure
 * before the mount is one line on standard error and exit status 1.
 *
 * Shutdown: the first SIGTERM or SIGINT drains (open files get up to
 * --shutdown-timeout to be closed and uploaded, then the rest is aborted),
 * unmounts and exits 0. A second signal aborts pending uploads and exits at
 * once. An external unmount (`fusermount3 -u`) ends the daemon the same way
 * as a first signal.
 */

import { mkdir, stat } from 'node:fs/promises';

import { BucketFilesystem } from '../fs/filesystem.js';
import { resolveFilesystemConfig } from '../fs/config.js';
import { FuseSession } from '../fuse/session.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { parseMountArguments, UsageError, type MountConfig } from './config.js';
import { createConnection, type Connection } from './connection.js';
import { explainFailure } from './explain.js';

/** A failure before the mount was ready, explained for the operator. */
class MountStartError extends Error {
  override readonly name = 'MountStartError';
  readonly explanation: string;

  constructor(explanation: string, cause: unknown) {
    super(explanation, { cause });
    this.explanation = explanation;
  }
}

async function checkMountpoint(mountpoint: string): Promise<void> {
  // A descriptor passed by a privileged helper (/dev/fd/N) is not a directory.
  if (/^\/dev\/fd\/\d+$/.test(mountpoint)) return;

  try {
    const info = await stat(mountpoint);
    if (!info.isDirectory()) {
      throw new UsageError(`mount point ${mountpoint} is not a directory: give an empty directory`);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    throw new UsageError(`mount point ${mountpoint} does not exist: create it with "mkdir -p ${mountpoint}"`);
  }
}

async function connect(config: MountConfig, logger: Logger): Promise<Connection> {
  // Enough sockets for every reader's readahead and every writer's parts at once.
  const maxSockets = Math.max(64, config.uploadConcurrency * 4 + Math.ceil(config.maxReadahead / config.blockSize) * 4);
  const connection = createConnection(config, { logger, refreshFraction: config.refreshFraction, maxSockets });

  try {
    await connection.credentials.start();
  } catch (error) {
    // The refresher keeps retrying after a failed first exchange; stop it so the process can exit.
    connection.close();
    throw new MountStartError(explainFailure(error, config), error);
  }

  try {
    await connection.store.list({ prefix: config.location.prefix, delimiter: '/', maxKeys: 1 });
  } catch (error) {
    connection.close();
    throw new MountStartError(explainFailure(error, config), error);
  }

  return connection;
}

export async function runMount(argv: string[]): Promise<number> {
  const config = parseMountArguments(argv);
  await checkMountpoint(config.mountpoint);

  const logger = createLogger(config.logLevel as 'info');
  const startedAt = performance.now();
  logger.info({ event: 'mount-starting', url: config.location.url, mountpoint: config.mountpoint }, `mounting ${config.location.url} at ${config.mountpoint}`);

  const connection = await connect(config, logger);

  const filesystemConfig = resolveFilesystemConfig({
    prefix: config.location.prefix,
    uid: config.uid,
    gid: config.gid,
    fileMode: config.fileMode,
    dirMode: config.dirMode,
    readOnly: config.readOnly,
    metadataTtlMs: config.metadataTtlSeconds * 1000,
    blockSize: config.blockSize,
    maxReadahead: config.maxReadahead,
    partSize: config.partSize,
    uploadConcurrency: config.uploadConcurrency,
    memoryLimitBytes: config.memoryLimit,
    ...(config.spillDirectory !== undefined ? { spillDirectory: config.spillDirectory } : {}),
  });
  await mkdir(filesystemConfig.spillDirectory, { recursive: true, mode: 0o700 });

  const filesystem = new BucketFilesystem({ store: connection.store, config: filesystemConfig, logger: logger.child({ component: 'fs' }) });

  let session: FuseSession;
  try {
    session = await FuseSession.mount(
      {
        mountpoint: config.mountpoint,
        fsName: `bucketmount:${config.location.url}`,
        subtype: 'bucketmount',
        allowOther: config.allowOther,
        readOnly: config.readOnly,
        debug: false,
        requestTimeoutMs: config.requestTimeoutSeconds * 1000,
        maxThreads: 16,
        autoUnmount: true,
      },
      filesystem,
      logger.child({ component: 'fuse' }),
    );
  } catch (error) {
    connection.close();
    throw new MountStartError(`cannot mount at ${config.mountpoint}: ${(error as Error).message}`, error);
  }

  logger.info(
    { event: 'mount-ready', url: config.location.url, mountpoint: config.mountpoint, startupMs: Math.round(performance.now() - startedAt) },
    `mounted ${config.location.url} at ${config.mountpoint}; ready`,
  );

  return serveUntilStopped(config, session, filesystem, connection, logger);
}

/** Waits for a signal or an external unmount, then shuts down in order. */
async function serveUntilStopped(config: MountConfig, session: FuseSession, filesystem: BucketFilesystem, connection: Connection, logger: Logger): Promise<number> {
  let signalCount = 0;

  const stopped = new Promise<string>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      signalCount += 1;
      if (signalCount === 1) {
        logger.info({ event: 'shutdown-requested', signal }, `received ${signal}: finishing uploads, then unmounting`);
        resolve(signal);
        return;
      }
      logger.warn({ event: 'shutdown-forced', signal }, `received ${signal} again: aborting pending uploads and exiting`);
      void filesystem.shutdown({ drain: false }).finally(() => {
        void session.unmount().finally(() => process.exit(1));
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    void session.closed.then(() => resolve('unmount'));
  });

  const reason = await stopped;

  const drainTimer = setTimeout(() => {
    logger.warn({ timeoutSeconds: config.shutdownTimeoutSeconds }, 'open files were not closed within the shutdown timeout; aborting their uploads');
    void filesystem.shutdown({ drain: false });
  }, config.shutdownTimeoutSeconds * 1000);
  drainTimer.unref();

  try {
    await filesystem.shutdown({ drain: true });
  } catch (error) {
    logger.error({ err: error }, 'pending uploads failed during shutdown');
  }
  clearTimeout(drainTimer);

  await session.unmount();
  connection.close();
  logger.info({ event: 'mount-stopped', reason, mountpoint: config.mountpoint }, `unmounted ${config.mountpoint}`);
  logger.flush();
  return 0;
}
