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
}

/** Wraps the store so that every request is counted; below the scheduler, so queueing time is not counted as request time. */
function instrument(store: ObjectStore, options: ConnectionOptions): ObjectStore {
  return options.metrics === undefined ? store : new InstrumentedStore(store, options.metrics);
}

/**
 * Creates the connection; nothing is sent until `credentials.start()`.
 *
 * The modules of one cloud are imported here, on demand, because loading the
 * AWS SDK and the Google Cloud client library is most of the daemon's start-up
 * time, and a mount needs only one of them. On a shared 2-core VM with Node
 * 24.21, the S3 store module loaded in about 120 ms and the GCS store module
 * in about 180 ms (best of five, an estimate).
 */
export async function createConnection(config: CommonConfig, options: ConnectionOptions): Promise<Connection> {
  const logger = options.logger;
  const credentials = config.credentials;

  if (credentials.kind === 'aws-web-identity') {
    const [{ awsCredentialProvider, createAwsWebIdentityCredentialSource }, { S3Store }] = await Promise.all([
      import('../credentials/aws-web-identity.js'),
      import('../store/s3.js'),
    ]);
    const source = createAwsWebIdentityCredentialSource(
      {
        roleArn: credentials.roleArn,
        tokenFile: credentials.tokenFile,
        region: config.region,
        stsEndpoint: credentials.stsEndpoint,
        sessionName: credentials.roleSessionName,
        durationSeconds: credentials.durationSeconds,
      },
      { logger: logger.child({ component: 'credentials' }), renewAtFraction: options.refreshFraction },
    );

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
    return { credentials: source as CredentialSource<unknown>, store: schedule(instrument(store, options), options), tokenFile: credentials.tokenFile, close: closer(source as CredentialSource<unknown>, store) };
  }

  const [{ createGcpWifCredentialSource }, { GcsStore }] = await Promise.all([import('../credentials/gcp-wif.js'), import('../store/gcs.js')]);
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

  const store = new GcsStore({
    bucket: config.location.bucket,
    credentials: source,
    apiEndpoint: config.endpoint,
    logger: logger.child({ component: 'store' }),
    onRetry: () => options.metrics?.storeRetry(),
  });
  return { credentials: source as CredentialSource<unknown>, store: schedule(instrument(store, options), options), tokenFile: credentials.tokenFile, close: closer(source as CredentialSource<unknown>, store) };
}
