/**
 * A daemon process for the test that unmounts during large reads. It mounts
 * a MemoryFilesystem at the directory given as the first argument, with one
 * direct I/O file, big.bin, of 8 MiB of random bytes, and prints
 * "ready SHA256" on stdout. Once the kernel has sent the number of reads
 * given as the second argument, it unmounts, prints "closed" when the
 * session is torn down, and exits. The test runs it in a child process so
 * that it can kill a teardown that hangs, which would otherwise block the
 * test runner's own thread.
 */

import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { pino } from 'pino';

import { FuseSession, MAX_IO_SIZE } from '../session.js';
import { MemoryFilesystem } from './memory-filesystem.js';

const mountpoint = process.argv[2];
const readsBeforeUnmount = Number(process.argv[3]);
if (mountpoint === undefined || !Number.isInteger(readsBeforeUnmount) || readsBeforeUnmount < 1) {
  process.stderr.write('usage: unmount-child.ts MOUNTPOINT READS_BEFORE_UNMOUNT\n');
  process.exit(2);
}

const data = randomBytes(8 * MAX_IO_SIZE);
const filesystem = new MemoryFilesystem({ directIoFiles: new Set(['big.bin']) });
filesystem.addFile(1, 'big.bin', data);

const logger = pino({ level: 'warn' }, pino.destination(2));
const session = await FuseSession.mount(
  { mountpoint, fsName: 'memory', subtype: 'bucketmount-test', allowOther: false, readOnly: false, debug: false, requestTimeoutMs: 30_000, maxThreads: 4, autoUnmount: true },
  filesystem,
  logger,
);
process.stdout.write(`ready ${createHash('sha256').update(data).digest('hex')}\n`);

while (filesystem.readSizes.length < readsBeforeUnmount) await sleep(5);
await session.unmount();
process.stdout.write('closed\n');
