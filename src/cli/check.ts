/**
 * `bucketmount check URL`: the connection test a platform operator runs
 * before mounting. Each step prints `OK` with what it found, or `FAILED` with
 * the reason in plain words. Steps after a failure are skipped, because they
 * could only fail for the same reason. Exit status 0 when every step passed,
 * 1 otherwise.
 */

import { randomBytes } from 'node:crypto';

import { TokenFileError } from '../credentials/errors.js';
import { describeTokenClaims, isTokenExpired, readTokenFile } from '../credentials/token-file.js';
import { createLogger } from '../observability/logger.js';
import type { ObjectStore } from '../store/types.js';
import { parseCheckArguments, type CheckConfig } from './config.js';
import { createConnection } from './connection.js';
import { explainFailure } from './explain.js';

interface Step {
  name: string;
  run: () => Promise<string>;
}

function report(status: 'OK' | 'FAILED' | 'SKIPPED', name: string, detail: string): void {
  process.stdout.write(`${status.padEnd(7)} ${name}: ${detail}\n`);
}

export async function runCheck(argv: string[]): Promise<number> {
  const config: CheckConfig = parseCheckArguments(argv);

  // Logs go to standard error at warn by default, so the step lines stay readable.
  const logger = createLogger(config.logLevel === 'info' ? 'warn' : (config.logLevel as 'warn'));
  const connection = await createConnection(config, { logger });
  const store: ObjectStore = connection.store;
  const location = config.location;
  const testKey = `${location.prefix}.bucketmount-check-${randomBytes(6).toString('hex')}`;
  const testBody = randomBytes(1024);

  const steps: Step[] = [];

  if (connection.tokenFile !== undefined) {
    const tokenFile = connection.tokenFile;
    steps.push({
      name: 'token file',
      run: async () => {
        const token = await readTokenFile(tokenFile);
        if (isTokenExpired(token.claims, new Date())) {
          throw new TokenFileError(tokenFile, {
            code: 'TokenExpired',
            explanation: `the token in ${tokenFile} expired at ${token.claims.expiresAt?.toISOString()}: the token file is not being renewed; check the projected service-account token volume`,
          });
        }
        return `${tokenFile}: ${describeTokenClaims(token.claims)}`;
      },
    });
  }

  steps.push(
    {
      name: 'credentials',
      run: async () => {
        await connection.credentials.start();
        const expiration = connection.credentials.state().expiration;
        const identity =
          config.credentials.kind === 'aws-web-identity'
            ? `assumed ${config.credentials.roleArn}`
            : `impersonated ${config.credentials.serviceAccount ?? 'the configured service account'}`;
        return `${identity}; credentials valid until ${expiration?.toISOString() ?? 'an unknown time'}`;
      },
    },
    {
      name: 'list',
      run: async () => {
        const page = await store.list({ prefix: location.prefix, delimiter: '/', maxKeys: 100 });
        const count = page.objects.length + page.prefixes.length;
        return `${count}${page.nextToken ? '+' : ''} entries at the top of ${location.url}`;
      },
    },
    {
      name: 'write',
      run: async () => {
        await store.put(testKey, testBody);
        return `wrote ${testBody.length} bytes to ${testKey}`;
      },
    },
    {
      name: 'read back',
      run: async () => {
        const result = await store.get(testKey);
        if (!result.body.equals(testBody)) {
          throw new Error(`read ${result.body.length} bytes from ${testKey} that differ from the ${testBody.length} bytes written`);
        }
        return `read the same ${result.body.length} bytes back`;
      },
    },
    {
      name: 'delete',
      run: async () => {
        await store.delete(testKey);
        return `deleted ${testKey}`;
      },
    },
  );

  let failed = false;
  let wroteTestObject = false;
  for (const step of steps) {
    if (failed) {
      report('SKIPPED', step.name, 'an earlier step failed');
      continue;
    }
    try {
      report('OK', step.name, await step.run());
      if (step.name === 'write') wroteTestObject = true;
      if (step.name === 'delete') wroteTestObject = false;
    } catch (error) {
      failed = true;
      report('FAILED', step.name, explainFailure(error, config));
    }
  }

  // Leave nothing behind when reading back failed after a successful write.
  if (wroteTestObject) {
    await store.delete(testKey).catch((error: unknown) => logger.warn({ key: testKey, err: error }, 'could not delete the check object'));
  }

  connection.close();
  logger.flush();
  process.stdout.write(failed ? `check of ${location.url} FAILED\n` : `check of ${location.url} passed\n`);
  return failed ? 1 : 0;
}
