/**
 * `bucketmount unmount MOUNTPOINT`: asks the kernel to detach a FUSE mount.
 *
 * fusermount3 works for unprivileged users; root falls back to umount(8) when
 * fusermount3 is missing. A running daemon sees the unmount and exits.
 */

import { detachMount } from '../fuse/detach.js';
import { UsageError } from './config.js';

export async function unmount(argv: string[]): Promise<void> {
  const lazy = argv.includes('--lazy');
  const positionals = argv.filter((argument) => argument !== '--lazy');
  const unknown = positionals.find((argument) => argument.startsWith('-'));
  if (unknown !== undefined) {
    throw new UsageError(`unknown option ${unknown} for unmount: the only option is --lazy`);
  }
  if (positionals.length !== 1) {
    throw new UsageError('expected one mount point: run "bucketmount unmount MOUNTPOINT [--lazy]"');
  }
  const mountpoint = positionals[0] as string;

  try {
    await detachMount(mountpoint, lazy);
  } catch (error) {
    if (lazy) throw error;
    throw new Error(`${(error as Error).message}; if files are still open there, retry with --lazy`, { cause: error });
  }
}
