/**
 * Detaches a FUSE mount from its mount point, for `bucketmount unmount` and
 * for a dead mount that a killed daemon left where a new one starts.
 *
 * fusermount3 works for unprivileged users on their own mounts; root falls
 * back to umount(8) when fusermount3 is missing.
 */

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

/**
 * Promisified on the first call rather than when this module loads, because
 * the daemon's start-up snapshot contains this module loaded and promisify would
 * load `node:child_process` into it, which Node does not support there.
 */
let execFilePromise: ((file: string, args: string[]) => Promise<unknown>) | undefined;
function execFileAsync(file: string, args: string[]): Promise<unknown> {
  execFilePromise ??= promisify(execFile);
  return execFilePromise(file, args);
}

/**
 * Runs `fusermount3 -u` (with `-z` when `lazy`: detach now, release when the
 * last open file closes). Throws an Error that carries the helper's message.
 */
export async function detachMount(mountpoint: string, lazy: boolean): Promise<void> {
  try {
    await execFileAsync('fusermount3', ['-u', ...(lazy ? ['-z'] : []), mountpoint]);
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw failure(mountpoint, error);
  }

  try {
    await execFileAsync('umount', [...(lazy ? ['-l'] : []), mountpoint]);
  } catch (error) {
    throw failure(mountpoint, error);
  }
}

function failure(mountpoint: string, error: unknown): Error {
  const details = error as Error & { stderr?: string };
  return new Error(`cannot unmount ${mountpoint}: ${(details.stderr || details.message).trim()}`, { cause: error });
}
