/**
 * Builds the credential source and the object store of one bucket location
 * from a validated configuration. `check` and `mount` share it, so the
 * connection test exercises exactly what a mount would use.
 *
 * Nothing here reads ambient cloud configuration: the S3 client gets its
 * region, endpoint and credentials explicitly, and the GCS client gets its
 * access tokens only from our credential source.
 */

import type { Logger } from '../observability/logger.js';
import type { StoreMetricsRecorder } from '../observability/metrics.js';
import type { CredentialSource } from '../credentials/types.js';
import { InstrumentedStore } from '../store/instrumented.js';
import { ScheduledStore } from '../store/scheduled.js';
import type { ObjectStore } from '../store/types.js';
import type { CommonConfig } from './config.js';

export interface Connection {
  credentials: CredentialSource<unknown>;
  /**
   * The first credential exchange, when `ConnectionOptions.startCredentials`
   * was set. It rejects as `credentials.start()` does. A rejection is not
   * reported as unhandled while no caller awaits it.
   */
  firstExchange?: Promise<void>;
  store: ObjectStore;
  /** Path of the token file the credentials are exchanged from, when known. */
  tokenFile?: string;
  /** Stops the credential refresher and closes the store's connections; idempotent. */
  close(): void;
}

function closer(credentials: CredentialSource<unknown>, store: ObjectStore & { destroy?: () => void }): () => void {
  return () => {
    credentials.stop();
    store.destroy?.();
  };
}

/** Puts the mount's request scheduler in front of the store when a socket count is given. */
/** Builds the connection of either cloud from its credential source and store. */
function assemble(
  source: CredentialSource<unknown>,
  firstExchange: Connection['firstExchange'],
  store: ObjectStore & { destroy?: () => void },
  tokenFile: string | undefined,
  options: ConnectionOptions,
): Connection {
  const connection: Connection = { credentials: source, store: schedule(instrument(store, options), options), close: closer(source, store) };
  if (firstExchange !== undefined) connection.firstExchange = firstExchange;
  if (tokenFile !== undefined) connection.tokenFile = tokenFile;
  return connection;
}

function schedule(store: ObjectStore, options: ConnectionOptions): ObjectStore {
  return options.maxSockets === undefined ? store : new ScheduledStore(store, { concurrency: options.maxSockets });
}

export interface ConnectionOptions {
  logger: Logger;
  /** Fraction of the credentials' lifetime after which they are renewed. */
  refreshFraction?: number;
  /** HTTP sockets per store, sized for the mount's read and upload concurrency; also the scheduler's slot count. */
  maxSockets?: number;
  /** Receives the count, duration and outcome of every store request and retry, for metrics. */
  metrics?: StoreMetricsRecorder;
  /**
   * Sends the first credential exchange as soon as the credential module is
   * loaded, before the storage SDK is, so that the exchange's round trip
   * overlaps that loading. Its outcome is `Connection.firstExchange`.
   */
  startCredentials?: boolean;
}

/** Wraps the store so that every request is counted; below the scheduler, so queueing time is not counted as request time. */
function instrument(store: ObjectStore, options: ConnectionOptions): ObjectStore {
  return options.metrics === undefined ? store : new InstrumentedStore(store, options.metrics);
}

/**
 * Event loop turns given to the first exchange after its request reached the
 * HTTP handler: one to issue the connect, one to write the request once the
 * connection is up. Loading the storage SDK blocks the event loop, so a
 * request not yet written then waits for the loading to end.
 * NOTE: a TLS handshake or a DNS lookup needs more turns than these, so
 * against a remote HTTPS endpoint the overlap is only partial.
 */
const SEND_TURNS = 2;

/**
 * Starts the first exchange of `source` and resolves once its request is on
 * the network: after `dispatched` (see `nextRequestDispatched` and
 * `nextTokenRequestSent`) and SEND_TURNS more event loop turns, or when the
 * exchange ends first. The exchange is returned inside an object, because
 * awaiting a promise that resolves to a promise would wait for the exchange
 * itself.
 */
async function startFirstExchange(source: CredentialSource<unknown>, dispatched: Promise<void>): Promise<{ exchange: Promise<void> }> {
  const exchange = source.start();
  // Awaited by the caller later; until then a failure must not count as an unhandled rejection.
  exchange.catch(() => undefined);

  await Promise.race([dispatched, exchange.catch(() => undefined)]);
  for (let turn = 0; turn < SEND_TURNS; turn += 1) {
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return { exchange };
}

/** Stops the refresher when the rest of the connection cannot be created, so that it does not keep the process alive. */
async function stopOnFailure<T>(source: CredentialSource<unknown>, create: () => Promise<T>): Promise<T> {
  try {
    return await create();
  } catch (error) {
    source.stop();
    throw error;
  }
}

/**
 * Creates the connection. Nothing is sent until `credentials.start()`,
 * unless `options.startCredentials` is set.
 *
 * The modules of one cloud are imported here, on demand, because loading the
 * AWS SDK and the Google Cloud client library is most of the daemon's start-up
 * time, and a mount needs only one of them. On a shared 2-core VM with Node
 * 24.21, the S3 store module loaded in about 120 ms and the GCS store module
 * in about 130 ms (best of seven, an estimate). The credential module is
 * loaded first, so that the exchange can start before the store module loads.
 */
export async function createConnection(config: CommonConfig, options: ConnectionOptions): Promise<Connection> {
  const logger = options.logger;
  const credentials = config.credentials;

  if (credentials.kind === 'aws-web-identity') {
    const { awsCredentialProvider, createAwsWebIdentityCredentialSource, createStsClient, nextRequestDispatched } = await import('../credentials/aws-web-identity.js');
    const stsConfig = {
      roleArn: credentials.roleArn,
      tokenFile: credentials.tokenFile,
      region: config.region,
      stsEndpoint: credentials.stsEndpoint,
      sessionName: credentials.roleSessionName,
      durationSeconds: credentials.durationSeconds,
    };
    const stsClient = createStsClient(stsConfig);
    const source = createAwsWebIdentityCredentialSource(stsConfig, { logger: logger.child({ component: 'credentials' }), renewAtFraction: options.refreshFraction }, stsClient);
    const firstExchange = options.startCredentials ? (await startFirstExchange(source, nextRequestDispatched(stsClient))).exchange : undefined;

    return stopOnFailure(source, async () => {
      const { S3Store } = await import('../store/s3.js');
      const store = new S3Store({
        bucket: config.location.bucket,
        region: config.region,
        endpoint: config.endpoint,
        forcePathStyle: config.pathStyle,
        credentials: awsCredentialProvider(source),
        maxSockets: options.maxSockets,
        logger: logger.child({ component: 'store' }),
        onInvalidCredentials: async () => {
          await source.invalidate('the storage service rejected the credentials');
        },
        onRetry: () => options.metrics?.storeRetry(),
      });
      return assemble(source, firstExchange, store, credentials.tokenFile, options);
    });
  }

  const { createGcpWifCredentialSource, nextTokenRequestSent } = await import('../credentials/gcp-wif.js');
  const source = createGcpWifCredentialSource(
    {
      credentialsFile: credentials.credentialsFile,
      provider: credentials.provider,
      serviceAccount: credentials.serviceAccount,
      tokenFile: credentials.tokenFile,
      stsEndpoint: credentials.stsEndpoint,
      iamEndpoint: credentials.iamEndpoint,
      tokenLifetimeSeconds: credentials.tokenLifetimeSeconds,
    },
    { logger: logger.child({ component: 'credentials' }), renewAtFraction: options.refreshFraction },
  );
  const firstExchange = options.startCredentials ? (await startFirstExchange(source, nextTokenRequestSent(source))).exchange : undefined;

  return stopOnFailure(source, async () => {
    const { GcsStore } = await import('../store/gcs.js');
    const store = new GcsStore({
      bucket: config.location.bucket,
      credentials: source,
      apiEndpoint: config.endpoint,
      logger: logger.child({ component: 'store' }),
      onRetry: () => options.metrics?.storeRetry(),
    });
    return assemble(source, firstExchange, store, credentials.tokenFile, options);
  });
}
