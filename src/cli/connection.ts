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
import { awsCredentialProvider, createAwsWebIdentityCredentialSource } from '../credentials/aws-web-identity.js';
import { createGcpWifCredentialSource } from '../credentials/gcp-wif.js';
import type { CredentialSource } from '../credentials/types.js';
import { GcsStore } from '../store/gcs.js';
import { S3Store } from '../store/s3.js';
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

export interface ConnectionOptions {
  logger: Logger;
  /** Fraction of the credentials' lifetime after which they are renewed. */
  refreshFraction?: number;
  /** HTTP sockets per store; sized for the mount's read and upload concurrency. */
  maxSockets?: number;
}

/** Creates the connection; nothing is sent until `credentials.start()`. */
export function createConnection(config: CommonConfig, options: ConnectionOptions): Connection {
  const logger = options.logger;
  const credentials = config.credentials;

  if (credentials.kind === 'aws-web-identity') {
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
    });
    return { credentials: source as CredentialSource<unknown>, store, tokenFile: credentials.tokenFile, close: closer(source as CredentialSource<unknown>, store) };
  }

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
  });
  return { credentials: source as CredentialSource<unknown>, store, tokenFile: credentials.tokenFile, close: closer(source as CredentialSource<unknown>, store) };
}
