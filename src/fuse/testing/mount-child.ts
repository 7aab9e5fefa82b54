/**
 * A daemon process for the kill -9 tests: mounts a MemoryFilesystem at the
 * directory given as the first argument, prints "ready" on stdout, and serves
 * until it is killed. `--no-auto-unmount` mounts without libfuse's
 * auto_unmount helper, so that a kill leaves a dead mount behind.
 */

import { pino } from 'pino';

import { FuseSession } from '../session.js';
import { MemoryFilesystem } from './memory-filesystem.js';

const mountpoint = process.argv[2];
const autoUnmount = !process.argv.slice(3).includes('--no-auto-unmount');
if (mountpoint === undefined) {
  process.stderr.write('usage: mount-child.ts MOUNTPOINT [--no-auto-unmount]\n');
  process.exit(2);
}

const filesystem = new MemoryFilesystem();
filesystem.addFile(1, 'hello.txt', Buffer.from('hello\n'));

const logger = pino({ level: 'warn' }, pino.destination(2));
await FuseSession.mount(
  { mountpoint, fsName: 'memory', subtype: 'bucketmount-test', allowOther: false, readOnly: false, debug: false, requestTimeoutMs: 30_000, maxThreads: 2, autoUnmount },
  filesystem,
  logger,
);
process.stdout.write('ready\n');
