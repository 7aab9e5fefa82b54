import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { CredentialError } from '../credentials/errors.js';
import { parseCheckArguments } from './config.js';
import { createConnection, type Connection } from './connection.js';

const silent = pino({ level: 'silent' });

describe('createConnection', () => {
  let work: string;
  let connection: Connection | undefined;

  beforeEach(async () => {
    work = await mkdtemp(join(tmpdir(), 'bucketmount-connection-'));
  });

  afterEach(async () => {
    connection?.close();
    connection = undefined;
    await rm(work, { recursive: true, force: true });
  });

  /** Returns a configuration whose token file does not exist, so that an exchange fails without any request. */
  function configWithoutToken() {
    return parseCheckArguments([
      's3://connection-test',
      '--token-file',
      join(work, 'missing-token'),
      '--role-arn',
      'arn:aws:iam::123456789012:role/sandbox-data',
      '--region',
      'us-east-1',
      '--endpoint',
      'http://127.0.0.1:9',
      '--sts-endpoint',
      'http://127.0.0.1:9',
    ]);
  }

  it('sends nothing without startCredentials', async () => {
    connection = await createConnection(configWithoutToken(), { logger: silent });

    expect(connection.firstExchange).toBeUndefined();
    expect(connection.credentials.state().totalFailures).toBe(0);
    expect(connection.credentials.state().totalRenewals).toBe(0);
  });

  it('runs the first exchange with startCredentials', async () => {
    connection = await createConnection(configWithoutToken(), { logger: silent, startCredentials: true });

    // The exchange ended before the connection was returned, so its failure is already counted.
    expect(connection.credentials.state().totalFailures).toBe(1);
    expect(connection.firstExchange).toBeInstanceOf(Promise);
    const failure = await connection.firstExchange?.then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(CredentialError);
    expect((failure as CredentialError).code).toBe('TokenFileMissing');
  });
});
