/**
 * The process logger: pino writing JSON lines to stderr.
 *
 * Secrets are removed by redaction paths here, in one place, so that a log call
 * anywhere cannot print a token even when it logs a whole request or error
 * object.
 */

import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

export const REDACTED_PATHS = [
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'access_token',
  '*.access_token',
  'subjectToken',
  '*.subjectToken',
  'subject_token',
  '*.subject_token',
  'secretAccessKey',
  '*.secretAccessKey',
  'sessionToken',
  '*.sessionToken',
  'credentials',
  '*.credentials',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'WebIdentityToken',
  '*.WebIdentityToken',
];

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Creates the logger of a process. Writes are synchronous: log volume is low
 * (failed operations and lifecycle events; per-request lines only at debug),
 * and nothing is lost when the process exits right after a line.
 */
export function createLogger(level: LevelWithSilent = 'info', fileDescriptor = 2): Logger {
  return pino(
    {
      name: 'bucketmount',
      level,
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: fileDescriptor, sync: true }),
  );
}
