/**
 * `bucketmount mount URL MOUNTPOINT`: serves one bucket location at a mount
 * point in the foreground.
 *
 * Start-up order: validate options, send the first credential exchange, load
 * the storage SDK and the filesystem modules while it is on the network (a
 * start from the start-up snapshot has them loaded already), and mount. While
 * the mount is made, wait for the credentials and probe the bucket by listing
 * the first page of the mount's root. A wrong bucket or endpoint then fails
 * here, with a clear message, and not as EIO on the first `ls`. That listing
 * also serves the first readdir. Requests that arrive before that wait for the
 * credentials. When either check fails, the daemon unmounts again, and every
 * failure before the mount is ready is one line on standard error and exit
 * status 1. Only then is the mount ready (the `mount-ready` log line and
 * /healthz).
 *
 * Shutdown: the first SIGTERM or SIGINT drains (open files get up to
 * --shutdown-timeout to be closed and uploaded, then the rest is aborted),
 * unmounts and exits 0. A second signal aborts pending uploads and exits at
 * once. An external unmount (`fusermount3 -u`) ends the daemon the same way
 * as a first signal. The unmount is lazy: when a program still holds a file
 * or a working directory in the mount, the kernel keeps the connection until
 * it lets go, so the daemon waits only UNMOUNT_WAIT_MS for that and then
 * exits, which ends the connection (those programs then get ENOTCONN).
 *
 * With --metrics-port, an HTTP endpoint serves /metrics, /healthz (the FUSE
 * session is mounted and the event loop answers) and /readyz (also: not
 * shutting down, and the credentials held have not expired).
 */

import { rmdirSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

import type { BucketFilesystem } from '../fs/filesystem.js';
import type { CredentialSource } from '../credentials/types.js';
import type { FuseSession } from '../fuse/session.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { createProcessRegistry, MountMetrics } from '../observability/metrics.js';
import { startOperationsServer, type HealthCheck, type OperationsServer } from '../observability/operations-server.js';
import { startupMode } from '../startup/startup-mode.js';
import { precompileHttpParser } from '../store/undici-options.js';
import { parseMountArguments, UsageError, type MountConfig } from './config.js';
import { createConnection, type Connection } from './connection.js';
import { explainFailure } from './explain.js';
import { chooseMemoryBudget, garbageThreshold, RESERVED_FOR_PROCESS, RESIDENT_ALLOWANCE } from './memory-limit.js';

/**
 * How long the daemon waits, after its lazy unmount, for the kernel to close
 * the FUSE connection. The kernel closes it at once when nothing in the mount
 * is open; a longer wait means a program holds a file or working directory
 * there, possibly for as long as it runs.
 */
const UNMOUNT_WAIT_MS = 5_000;

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
    const code = (error as NodeJS.ErrnoException).code;
    // A dead FUSE mount left by a killed daemon: the FUSE session detaches it before mounting.
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') return;
    if (code !== 'ENOENT') throw error;
    throw new UsageError(`mount point ${mountpoint} does not exist: create it with "mkdir -p ${mountpoint}"`);
  }
}

/** State that the health checks read, updated as the mount starts, serves and stops. */
interface MountState {
  credentials: CredentialSource<unknown> | undefined;
  session: FuseSession | undefined;
  sessionClosed: boolean;
  stopping: boolean;
  /** The spill directory, when this daemon created it and has not removed it yet. */
  createdSpillDirectory?: string | undefined;
}

function healthChecks(state: MountState): { liveness: HealthCheck[]; readiness: HealthCheck[] } {
  const mounted: HealthCheck = {
    name: 'fuse-session',
    run: () => {
      if (state.session === undefined) return { ok: false, detail: 'the bucket is not mounted yet' };
      if (state.sessionClosed) return { ok: false, detail: `the FUSE session at ${state.session.mountpoint} has closed` };
      return { ok: true, detail: `serving ${state.session.mountpoint}` };
    },
  };
  const running: HealthCheck = {
    name: 'shutdown',
    run: () => (state.stopping ? { ok: false, detail: 'shutting down: finishing uploads, then unmounting' } : { ok: true, detail: 'not shutting down' }),
  };
  const credentials: HealthCheck = {
    name: 'credentials',
    run: () => {
      const current = state.credentials?.state();
      const expiration = current?.expiration;
      if (expiration === undefined) return { ok: false, detail: `no credentials yet${current?.lastError ? `: ${current.lastError}` : ''}` };
      if (expiration.getTime() <= Date.now()) {
        return { ok: false, detail: `the credentials expired at ${expiration.toISOString()}${current?.lastError ? `; last renewal failed: ${current.lastError}` : ''}` };
      }
      return { ok: true, detail: `valid until ${expiration.toISOString()}` };
    },
  };
  return { liveness: [mounted], readiness: [running, credentials] };
}

/**
 * Loads the filesystem and FUSE modules. mountAndServe imports them after
 * sending the first credential exchange, so that their loading overlaps the
 * exchange's round trip.
 */
async function loadServingModules() {
  const [filesystem, filesystemConfig, fuse, staleUploads] = await Promise.all([
    import('../fs/filesystem.js'),
    import('../fs/config.js'),
    import('../fuse/session.js'),
    import('../write/stale-uploads.js'),
  ]);
  return {
    BucketFilesystem: filesystem.BucketFilesystem,
    resolveFilesystemConfig: filesystemConfig.resolveFilesystemConfig,
    FuseSession: fuse.FuseSession,
    errnoName: fuse.errnoName,
    receiveFuseDescriptor: fuse.receiveFuseDescriptor,
    abortStaleUploads: staleUploads.abortStaleUploads,
  };
}
type ServingModules = Awaited<ReturnType<typeof loadServingModules>>;

/** Creates the connection with the first credential exchange already sent; `awaitFirstCredentials` checks its outcome. */
async function openConnection(config: MountConfig, logger: Logger, metrics: MountMetrics | undefined): Promise<Connection> {
  // Enough sockets for every reader's readahead and every writer's parts at once.
  const maxSockets = Math.max(64, config.uploadConcurrency * 4 + Math.ceil(config.maxReadahead / config.blockSize) * 4);
  const connection = await createConnection(config, { logger, refreshFraction: config.refreshFraction, maxSockets, metrics, startCredentials: true });
  return connection;
}

async function awaitFirstCredentials(connection: Connection, config: MountConfig): Promise<void> {
  try {
    await (connection.firstExchange ?? connection.credentials.start());
  } catch (error) {
    throw new MountStartError(explainFailure(error, config), error);
  }
}

/** Lists the top of the location once, so that a wrong bucket or endpoint fails the mount. */
async function probeBucket(filesystem: BucketFilesystem, config: MountConfig): Promise<void> {
  try {
    // One page of the root rather than one key: it proves the same access, and the first readdir
    // of the mount (sandboxes list /data first) then needs no request of its own.
    await filesystem.prefetchRootListing();
  } catch (error) {
    throw new MountStartError(explainFailure(error, config), error);
  }
}

/**
 * Removes the spill directory when this daemon created it, after its
 * filesystem has stopped. Spill files are unlinked as soon as they are
 * created, so the directory is empty by then. Without this, every run left
 * an empty /tmp/bucketmount-spill-PID behind. Synchronous, because it also
 * runs right before the process exits.
 */
function removeSpillDirectory(state: MountState, logger: Logger): void {
  const directory = state.createdSpillDirectory;
  if (directory === undefined) return;
  state.createdSpillDirectory = undefined;

  try {
    rmdirSync(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    logger.warn({ err: error, directory }, `removing the spill directory ${directory} that this daemon created failed; remove it by hand`);
  }
}

/** Creates the filesystem, its spill directory and its scrape-time metrics. */
async function createFilesystem(
  config: MountConfig,
  connection: Connection,
  modules: ServingModules,
  memoryBytes: number,
  metrics: MountMetrics | undefined,
  state: MountState,
  logger: Logger,
): Promise<BucketFilesystem> {
  const filesystemConfig = modules.resolveFilesystemConfig({
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
    memoryLimitBytes: memoryBytes,
    ...(config.spillDirectory !== undefined ? { spillDirectory: config.spillDirectory } : {}),
  });
  // mkdir returns the first directory it created, undefined when the spill directory existed.
  const created = await mkdir(filesystemConfig.spillDirectory, { recursive: true, mode: 0o700 });
  if (created !== undefined) state.createdSpillDirectory = filesystemConfig.spillDirectory;

  const filesystem = new modules.BucketFilesystem({ store: connection.store, config: filesystemConfig, logger });
  metrics?.observeFilesystem(() => filesystem.statistics(), memoryBytes);
  return filesystem;
}

async function mountSession(
  config: MountConfig,
  modules: ServingModules,
  filesystem: BucketFilesystem,
  memoryBytes: number,
  metrics: MountMetrics | undefined,
  logger: Logger,
): Promise<FuseSession> {
  try {
    const nativeMountpoint = config.fuseFdSocket === undefined ? config.mountpoint : await receiveMountedDescriptor(config, modules, logger);
    return await modules.FuseSession.mount(
      {
        mountpoint: nativeMountpoint,
        fsName: `bucketmount:${config.location.url}`,
        subtype: 'bucketmount',
        allowOther: config.allowOther,
        readOnly: config.readOnly,
        debug: false,
        requestTimeoutMs: config.requestTimeoutSeconds * 1000,
        maxThreads: 16,
        autoUnmount: true,
        residentTargetBytes: memoryBytes + RESIDENT_ALLOWANCE,
        collectGarbageAfterBytes: garbageThreshold(memoryBytes),
        onOperationDone: (op, errno, durationMs, bytes) => {
          if (metrics === undefined) return;
          metrics.operationDone(op, errno, durationMs, modules.errnoName);
          if (op === 'read') metrics.bytesRead(bytes);
          else if (op === 'write') metrics.bytesWritten(bytes);
        },
      },
      filesystem,
      logger.child({ component: 'fuse' }),
    );
  } catch (error) {
    throw new MountStartError(`cannot mount at ${config.mountpoint}: ${(error as Error).message}`, error);
  }
}

/** Waits for the first credentials, then checks the bucket with them. */
async function checkAccess(connection: Connection, filesystem: BucketFilesystem, config: MountConfig): Promise<void> {
  await awaitFirstCredentials(connection, config);
  await probeBucket(filesystem, config);
}

/**
 * Waits for `access` (see checkAccess), with the FUSE session already
 * mounted. When it fails, the session is unmounted before the error is
 * thrown, so that the failed start leaves no mount.
 */
async function verifyMountedSession(session: FuseSession, filesystem: BucketFilesystem, access: Promise<void>, config: MountConfig, logger: Logger): Promise<void> {
  try {
    await access;
  } catch (error) {
    logger.info({ event: 'mount-abandoned', mountpoint: config.mountpoint }, `unmounting ${config.mountpoint}: the credentials or the bucket check failed`);
    // Requests that arrived meanwhile wait for credentials or the store; end them before unmounting.
    await filesystem.shutdown({ drain: false }).catch((shutdownError: unknown) => logger.error({ err: shutdownError }, 'stopping the filesystem of a failed start failed'));
    const closed = await unmountWithin(session, logger);
    if (!closed) {
      // The FUSE request loop keeps the event loop alive. Exit once main.ts has printed the error.
      setTimeout(() => process.exit(), 0);
    }
    throw error;
  }
}

export async function runMount(argv: string[]): Promise<number> {
  const config = parseMountArguments(argv);
  // With --fuse-fd-socket the helper has already mounted MOUNTPOINT, and a stat of it would
  // block until this daemon answers the kernel, so it is not checked.
  if (config.fuseFdSocket === undefined) await checkMountpoint(config.mountpoint);

  const logger = createLogger(config.logLevel as 'info');
  const startedAt = performance.now();
  precompileHttpParser(logger);
  logger.info(
    { event: 'mount-starting', url: config.location.url, mountpoint: config.mountpoint, startup: startupMode() },
    `mounting ${config.location.url} at ${config.mountpoint}`,
  );

  const state: MountState = { credentials: undefined, session: undefined, sessionClosed: false, stopping: false };
  // Started first, so that probes and scrapes during a slow start see why the mount is not ready.
  // Without --metrics-port nothing is counted, and prom-client is never loaded.
  let metrics: MountMetrics | undefined;
  let operations: OperationsServer | undefined;
  if (config.metricsPort !== 0) {
    metrics = new MountMetrics();
    const processRegistry = createProcessRegistry();
    const mountRegistry = metrics.registry;
    operations = await startOperationsServer({
      port: config.metricsPort,
      address: config.metricsAddress,
      registries: () => [processRegistry, mountRegistry],
      ...healthChecks(state),
      logger: logger.child({ component: 'operations-server' }),
    });
  }

  try {
    return await mountAndServe(config, logger, metrics, state, operations, startedAt);
  } catch (error) {
    await operations?.close();
    throw error;
  }
}

async function mountAndServe(config: MountConfig, logger: Logger, metrics: MountMetrics | undefined, state: MountState, operations: OperationsServer | undefined, startedAt: number): Promise<number> {
  const memory = await chooseMemoryBudget(config.memoryLimit, 2 * config.blockSize);
  logger.info(
    {
      event: 'memory-budget',
      budgetBytes: memory.bytes,
      source: memory.source,
      containerLimitBytes: memory.containerLimit?.bytes,
      cgroupFile: memory.containerLimit?.file,
    },
    memory.source === 'cgroup'
      ? `memory budget ${memory.bytes} bytes, derived from the cgroup v${memory.containerLimit!.cgroupVersion} memory limit of ${memory.containerLimit!.bytes} bytes`
      : `memory budget ${memory.bytes} bytes (${memory.source === 'option' ? 'from --memory-limit' : 'no container memory limit found; the default'})`,
  );
  if (memory.containerLimit !== undefined && memory.bytes > (memory.containerLimit.bytes - RESERVED_FOR_PROCESS) / 2) {
    logger.warn(
      { budgetBytes: memory.bytes, containerLimitBytes: memory.containerLimit.bytes, blockSize: config.blockSize },
      'the container memory limit leaves less room than two blocks need; raise the limit or lower --block-size, or the daemon risks being killed for memory',
    );
  }

  // One millisecond before the first store call: uploads of this daemon are all younger.
  const cleanupReferenceTime = Date.now() - 1;
  const connection = await openConnection(config, logger, metrics);
  state.credentials = connection.credentials;
  metrics?.observeCredentials(() => connection.credentials.state());

  let modules: ServingModules;
  let filesystem: BucketFilesystem;
  let session: FuseSession;
  try {
    modules = await loadServingModules();
    filesystem = await createFilesystem(config, connection, modules, memory.bytes, metrics, state, logger);
    // Mounted before the credentials and the bucket are known to work, so that the mount
    // overlaps the exchange and the bucket check; verifyMountedSession unmounts again when they
    // do not work. Until then the failure is handled there (or below, when mounting fails).
    const access = checkAccess(connection, filesystem, config);
    access.catch(() => undefined);
    session = await mountSession(config, modules, filesystem, memory.bytes, metrics, logger);
    await verifyMountedSession(session, filesystem, access, config, logger);
  } catch (error) {
    // The refresher keeps retrying after a failed first exchange; stop it so the process can exit.
    connection.close();
    removeSpillDirectory(state, logger);
    throw error;
  }

  // Set only now, so that /healthz, the sidecar's startup probe, passes only for a verified mount.
  state.session = session;
  void session.closed.then(() => {
    state.sessionClosed = true;
  });

  // Started before the ready line: serveUntilStopped installs the signal handlers before its first
  // await, so a SIGTERM sent as soon as the mount is ready drains and unmounts instead of killing
  // the process with Node's default action.
  const served = serveUntilStopped(config, session, filesystem, connection, state, operations, logger);

  logger.info(
    { event: 'mount-ready', url: config.location.url, mountpoint: config.mountpoint, startupMs: Math.round(performance.now() - startedAt) },
    `mounted ${config.location.url} at ${config.mountpoint}; ready`,
  );

  // After the mount is ready, so that sandboxes do not wait for it. Ages are measured from a time
  // before this daemon created any upload, so its own uploads are never taken for stale ones.
  // It never rejects: failures are logged and left for the next start or a lifecycle rule.
  void modules.abortStaleUploads({
    store: connection.store,
    prefix: config.location.prefix,
    maxAgeMs: config.staleUploadAgeSeconds * 1000,
    logger: logger.child({ component: 'stale-uploads' }),
    now: () => cleanupReferenceTime,
  });

  return served;
}

/**
 * Receives the /dev/fuse descriptor that the helper at --fuse-fd-socket
 * opened and mounted at MOUNTPOINT, and returns the `/dev/fd/N` mount point
 * that libfuse adopts without mounting.
 */
async function receiveMountedDescriptor(config: MountConfig, modules: ServingModules, logger: Logger): Promise<string> {
  const socketPath = config.fuseFdSocket as string;
  const timeoutMs = config.fuseFdTimeoutSeconds * 1000;
  logger.info({ event: 'fuse-fd-waiting', socket: socketPath, timeoutMs }, `waiting for the /dev/fuse descriptor of ${config.mountpoint} on ${socketPath}`);

  const received = await modules.receiveFuseDescriptor(socketPath, timeoutMs);
  // The socket stays open until this process exits: its end-of-file tells the helper to detach MOUNTPOINT.
  logger.info(
    { event: 'fuse-fd-received', socket: socketPath, descriptor: received.descriptor, mountpoint: config.mountpoint },
    `received the /dev/fuse descriptor of ${config.mountpoint} as fd ${received.descriptor}`,
  );
  return `/dev/fd/${received.descriptor}`;
}

/**
 * Unmounts lazily and waits up to UNMOUNT_WAIT_MS for the kernel to close the
 * connection. Returns false when it is still open because a program holds
 * something in the mount; exiting the process then ends the connection.
 */
async function unmountWithin(session: FuseSession, logger: Logger): Promise<boolean> {
  const closed = await Promise.race([session.unmount().then(() => true), sleep(UNMOUNT_WAIT_MS, false, { ref: false })]);
  if (!closed) {
    logger.warn(
      { mountpoint: session.mountpoint, waitedMs: UNMOUNT_WAIT_MS },
      'the mount was detached but a program still holds a file or directory in it; exiting ends the FUSE connection, and that program gets ENOTCONN',
    );
  }
  return closed;
}

/**
 * Waits for a signal or an external unmount, then shuts down in order. The
 * signal handlers are installed before the first await, when it is called.
 */
async function serveUntilStopped(
  config: MountConfig,
  session: FuseSession,
  filesystem: BucketFilesystem,
  connection: Connection,
  state: MountState,
  operations: OperationsServer | undefined,
  logger: Logger,
): Promise<number> {
  let signalCount = 0;
  let firstSignal: NodeJS.Signals | undefined;

  const stopped = new Promise<string>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      signalCount += 1;
      state.stopping = true;
      if (firstSignal === undefined) {
        firstSignal = signal;
        logger.info({ event: 'shutdown-requested', signal }, `received ${signal}: finishing uploads, then unmounting`);
        resolve(signal);
        return;
      }
      logger.warn(
        { event: 'shutdown-forced', signal, firstSignal },
        `received ${signal} while shutting down after ${firstSignal}: aborting pending uploads and exiting`,
      );
      void filesystem
        .shutdown({ drain: false })
        .catch((error: unknown) => logger.error({ err: error }, 'aborting uploads at a forced shutdown failed'))
        .then(() => unmountWithin(session, logger))
        .finally(() => {
          removeSpillDirectory(state, logger);
          logger.flush();
          process.exit(1);
        });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    void session.closed.then(() => resolve('unmount'));
  });

  const reason = await stopped;
  state.stopping = true;

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

  const closed = await unmountWithin(session, logger);
  connection.close();
  removeSpillDirectory(state, logger);
  await operations?.close();
  // A second signal during the drain aborted the uploads: that shutdown did not finish its work.
  const status = signalCount > 1 ? 1 : 0;
  logger.info({ event: 'mount-stopped', reason, mountpoint: config.mountpoint, status }, `unmounted ${config.mountpoint}`);
  logger.flush();
  if (!closed) {
    // The FUSE request loop still runs and keeps the event loop alive; exiting closes /dev/fuse.
    process.exit(status);
  }
  return status;
}
