/**
 * The one place where failures become errno values.
 *
 * The filesystem core throws `FilesystemError` for POSIX rule violations
 * (ENOTEMPTY, EISDIR, ...) and lets `StoreError`s from the store pass through;
 * the FUSE adapter calls `errnoOf` on whatever an operation rejected with.
 * The switch over `StoreErrorCode` is exhaustive, so adding a store error code
 * without choosing its errno is a compile error.
 */

import { constants } from 'node:os';

import { StoreError, type StoreErrorCode } from '../store/errors.js';

export const Errno = constants.errno;

export class FilesystemError extends Error {
  override readonly name = 'FilesystemError';
  readonly errno: number;
  /** Expected outcomes (ENOENT on lookup, EEXIST on create) log at debug, not warn. */
  readonly expected: boolean;

  constructor(errno: number, message: string, options: { cause?: unknown; expected?: boolean } = {}) {
    super(message, { cause: options.cause });
    this.errno = errno;
    this.expected = options.expected ?? false;
  }
}

export function errnoOfStoreCode(code: StoreErrorCode): number {
  switch (code) {
    case 'NotFound':
      return Errno.ENOENT;
    case 'NoSuchBucket':
      return Errno.ENOENT;
    case 'AccessDenied':
      return Errno.EACCES;
    case 'InvalidCredentials':
      return Errno.EACCES;
    case 'PreconditionFailed':
      // The object changed under an open handle: reads of it must not mix versions.
      return Errno.ESTALE;
    case 'Throttled':
      return Errno.EAGAIN;
    case 'Transient':
      return Errno.EIO;
    case 'InvalidRequest':
      return Errno.EINVAL;
    case 'Aborted':
      return Errno.EINTR;
    default: {
      const unhandled: never = code;
      throw new Error(`no errno chosen for store error code ${String(unhandled)}`);
    }
  }
}

/** Maps any rejection of a filesystem operation to a positive errno. */
export function errnoOf(error: unknown): number {
  if (error instanceof FilesystemError) return error.errno;
  if (error instanceof StoreError) return errnoOfStoreCode(error.code);

  // Local file errors (spill files, cache directory) carry a Node.js code such as 'ENOSPC'.
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code in Errno) return Errno[code as keyof typeof Errno];

  return Errno.EIO;
}
