/**
 * Crash safety: the daemon is killed with SIGKILL in the middle of a large
 * streaming write (dd from /dev/urandom through the mount). Then:
 * - no object, complete or partial, exists under the file's name, because
 *   a multipart upload becomes an object only when it completes;
 * - the mount point is usable again without any manual step: the mount was
 *   made with auto_unmount, so the kernel mount goes away with the daemon
 *   (or, when libfuse's helper misses it, the next daemon detaches it),
 *   and nothing answers "Transport endpoint is not connected";
 * - a new daemon mounts on the same mount point, and at its start it aborts
 *   the incomplete upload the killed daemon left (`--stale-upload-age 0`).
 *
 * BUCKETMOUNT_CRASH_WRITE_MIB sets the size of the interrupted write (512 by
 * default); the kill happens once dd has written half of it.
 */

import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startBackend, type BackendName, type TestBackend } from './backends.js';
import { removeMountpoint, shell, startDaemon, type MountedDaemon } from './daemon.js';

const BACKENDS: BackendName[] = (process.env.BUCKETMOUNT_TEST_BACKENDS ?? 's3,gcs').split(',') as BackendName[];
const MiB = 1024 * 1024;
const WRITE_MIB = Number(process.env.BUCKETMOUNT_CRASH_WRITE_MIB ?? '512');

/** Polls `condition` every 100 ms until it holds or `timeoutMs` passes; returns whether it held. */
async function waitFor(condition: () => Promise<boolean> | boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await sleep(100);
  }
  return condition();
}

/** Bytes a process has written so far, from /proc/PID/io; 0 once it is gone. */
async function bytesWritten(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/io`, 'utf8').catch(() => '');
  return Number(/^wchar: (\d+)$/m.exec(text)?.[1] ?? 0);
}

async function isMounted(mountpoint: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  return mounts.split('\n').some((line) => line.split(' ')[4] === mountpoint);
}

describe.each(BACKENDS)('crash during a large write on %s', (backendName) => {
  const bucket = `bucketmount-crash-${backendName}`;
  let backend: TestBackend;
  let mountpoint: string | undefined;
  const daemons: MountedDaemon[] = [];

  beforeAll(async () => {
    backend = await startBackend(backendName);
    await backend.createBucket(bucket);
  }, 120_000);

  afterAll(async () => {
    for (const daemon of daemons) await daemon.stop('SIGKILL').catch(() => undefined);
    if (mountpoint !== undefined) await removeMountpoint(mountpoint);
    await backend?.stop();
  }, 120_000);

  test('kill -9 leaves no object and the next start cleans up', async () => {
    const first = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: backend.connectionArgs() });
    daemons.push(first);
    mountpoint = first.mountpoint;

    // A sequential write streams as a multipart upload.
    const writer = spawn('dd', ['if=/dev/urandom', `of=${mountpoint}/large.bin`, 'bs=1M', `count=${WRITE_MIB}`, 'status=none'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let writerError = '';
    writer.stderr.on('data', (chunk: Buffer) => (writerError += chunk.toString()));
    const writerExit = new Promise<number | null>((resolve) => writer.on('close', (status) => resolve(status)));

    // Killed halfway: dd has written half of the file and parts are in the bucket.
    const halfway = await waitFor(async () => (await bytesWritten(writer.pid!)) >= (WRITE_MIB / 2) * MiB, 240_000);
    expect(halfway, `dd did not write half of the file; daemon output:\n${first.logs().slice(-3000)}`).toBe(true);
    expect((await backend.listIncompleteUploads(bucket)).length).toBeGreaterThan(0);

    first.process.kill('SIGKILL');
    expect(await first.exited).not.toBe(0);

    // The writer sees the connection go away; it must not report success.
    const writerStatus = await Promise.race([writerExit, sleep(60_000).then(() => 'still running' as const)]);
    expect(writerStatus, `dd output: ${writerError}`).not.toBe(0);
    expect(writerStatus).not.toBe('still running');

    // Nothing under the name: no object, complete or partial.
    expect(await backend.listKeys(bucket)).not.toContain('large.bin');
    expect(await backend.getObject(bucket, 'large.bin')).toBeUndefined();
    const leftBehind = await backend.listIncompleteUploads(bucket);
    expect(leftBehind.length).toBeGreaterThan(0);

    // auto_unmount removes the mount once the daemon is gone, so the directory is plain again.
    // libfuse's helper sometimes misses it (see checkMountpoint in src/fuse/session.ts). Then the next
    // daemon on the mount point detaches the dead mount before it mounts.
    const autoUnmounted = await waitFor(async () => !(await isMounted(mountpoint!)), 10_000);
    if (autoUnmounted) {
      const listing = await shell(`ls -la '${mountpoint}'`);
      expect(listing.stderr).not.toContain('Transport endpoint is not connected');
      expect(listing.status).toBe(0);
      expect(await readdir(mountpoint)).toEqual([]);
    }

    // A new daemon on the same mount point removes the upload the killed one left.
    const second = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...backend.connectionArgs(), '--stale-upload-age', '0'], mountpoint });
    daemons.push(second);
    if (!autoUnmounted) expect(second.logs()).toContain('detached the dead FUSE mount');
    // The cleanup runs in the background once the mount is ready.
    let remaining = await backend.listIncompleteUploads(bucket);
    for (let attempt = 0; attempt < 60 && remaining.length > 0; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      remaining = await backend.listIncompleteUploads(bucket);
    }
    expect(remaining).toEqual([]);
    expect(second.logs()).toContain('aborted a stale incomplete multipart upload');

    const roundTrip = await shell(`echo after-crash > '${mountpoint}/after.txt' && cat '${mountpoint}/after.txt' && ls '${mountpoint}'`);
    expect(roundTrip.stderr).toBe('');
    expect(roundTrip.stdout).toBe('after-crash\nafter.txt\n');
    expect((await backend.getObject(bucket, 'after.txt'))?.toString()).toBe('after-crash\n');

    expect(await second.stop()).toBe(0);
  }, 300_000);

  test('a new daemon detaches a dead mount left at its mount point', async () => {
    const first = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: backend.connectionArgs() });
    daemons.push(first);
    const deadMountpoint = first.mountpoint;

    // Killing libfuse's auto_unmount helper along with the daemon leaves the dead mount for certain.
    const helpers = await shell(`pgrep -f '[f]usermount3 .*${deadMountpoint}'`);
    expect(helpers.stdout.trim()).not.toBe('');
    expect((await shell(`kill -9 ${helpers.stdout.trim().split('\n').join(' ')}`)).status).toBe(0);
    first.process.kill('SIGKILL');
    await first.exited;
    expect(await isMounted(deadMountpoint)).toBe(true);
    expect((await shell(`stat '${deadMountpoint}'`)).stderr).toContain('Transport endpoint is not connected');

    const second = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: backend.connectionArgs(), mountpoint: deadMountpoint });
    daemons.push(second);
    expect(second.logs()).toContain('detached the dead FUSE mount');
    const roundTrip = await shell(`echo recovered > '${deadMountpoint}/recovered.txt' && cat '${deadMountpoint}/recovered.txt'`);
    expect(roundTrip.stderr).toBe('');
    expect(roundTrip.stdout).toBe('recovered\n');

    expect(await second.stop()).toBe(0);
    await removeMountpoint(deadMountpoint);
  }, 120_000);
});
