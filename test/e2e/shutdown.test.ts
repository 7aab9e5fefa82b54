/**
 * Shutdown of a real mount on MinIO while `dd` writes a 500 MiB file:
 * - the first SIGTERM drains: dd keeps writing to the file it has open, the
 *   upload completes when dd closes it, and the daemon exits 0;
 * - a second SIGTERM aborts: the multipart upload is aborted, no object and
 *   no incomplete upload remain, and the daemon exits 1 (this test writes
 *   with a Python copy loop, see `startCopy`);
 * - a program that keeps a directory of the mount busy does not hold the
 *   daemon: it unmounts lazily and exits 0.
 *
 * The writer reads from a FIFO that the test feeds, so "in the middle of the write"
 * is a byte count the test controls, not a moment in time.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';

import { startS3Backend, type TestBackend } from './backends.js';
import { removeMountpoint, shell, startDaemon, type MountedDaemon } from './daemon.js';
import { freePort } from '../env/ports.js';

const BUCKET = 'bucketmount-shutdown';
const MiB = 1024 * 1024;
const FILE_SIZE = Number(process.env.BUCKETMOUNT_TEST_SHUTDOWN_FILE_MIB ?? 500) * MiB;
/** Bytes written before the first signal: several parts, so the multipart upload exists. */
const BEFORE_SIGNAL = Math.min(100 * MiB, Math.floor(FILE_SIZE / 2));
const SHUTDOWN_TIMEOUT_SECONDS = 300;

/** A reproducible pseudo-random byte stream: AES-256-CTR over zeros with a fixed key. */
class PatternSource {
  private readonly cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16, 0));
  private readonly zeros = Buffer.alloc(MiB);
  readonly hash = createHash('sha256');

  next(bytes: number): Buffer {
    const chunk = this.cipher.update(bytes === MiB ? this.zeros : Buffer.alloc(bytes));
    this.hash.update(chunk);
    return chunk;
  }
}

/** Writes `bytes` of the pattern to `stream`, honouring backpressure. */
async function feed(stream: WriteStream, source: PatternSource, bytes: number): Promise<void> {
  for (let remaining = bytes; remaining > 0; remaining -= MiB) {
    if (!stream.write(source.next(Math.min(MiB, remaining)))) await once(stream, 'drain');
  }
}

/** Polls `condition` every 200 ms until it holds; fails with `what` after `timeoutMs`. */
async function waitUntil(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function isMounted(mountpoint: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === mountpoint);
}

describe('shutdown during a write on s3', () => {
  let backend: TestBackend;
  let scratch: string;
  const daemons: MountedDaemon[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-shutdown-'));
    backend = await startS3Backend();
    await backend.createBucket(BUCKET);
  });

  afterEach(async () => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
    for (const daemon of daemons.splice(0)) {
      await daemon.stop('SIGKILL');
      await removeMountpoint(daemon.mountpoint);
    }
  });

  afterAll(async () => {
    await backend?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  const start = async (extraArgs: string[] = []): Promise<MountedDaemon> => {
    const daemon = await startDaemon({
      bucketUrl: backend.bucketUrl(BUCKET),
      args: [...backend.connectionArgs(), '--shutdown-timeout', String(SHUTDOWN_TIMEOUT_SECONDS), ...extraArgs],
    });
    daemons.push(daemon);
    return daemon;
  };

  /**
   * Starts a copy of a new FIFO into `target`, with dd or with a Python loop;
   * returns the FIFO's write stream and the copier's exit.
   *
   * dd opens its output, moves it to descriptor 1 with dup2 and closes the
   * original descriptor. That close sends FLUSH, which uploads the still
   * empty file (flush uploads, see docs/semantics.md), so an empty object
   * exists from the start. The abort test uses the Python copier, which opens
   * the target once, so that "no object remains" is checked strictly.
   */
  const startCopy = async (
    copier: 'dd' | 'python',
    name: string,
    target: string,
  ): Promise<{ fifo: WriteStream; copyExit: Promise<number | null> }> => {
    const fifoPath = join(scratch, `${name}.fifo`);
    expect((await shell(`mkfifo '${fifoPath}'`)).status).toBe(0);
    const program = `
import shutil, sys
with open(sys.argv[1], 'rb') as source, open(sys.argv[2], 'wb') as target:
    shutil.copyfileobj(source, target, 1024 * 1024)
`;
    const dd =
      copier === 'dd'
        ? spawn('dd', [`if=${fifoPath}`, `of=${target}`, 'bs=1M', 'iflag=fullblock'], { stdio: ['ignore', 'ignore', 'pipe'] })
        : spawn('python3', ['-c', program, fifoPath, target], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(dd);
    const copyExit = new Promise<number | null>((resolve) => dd.on('exit', (status) => resolve(status)));
    const fifo = createWriteStream(fifoPath);
    await once(fifo, 'open');
    return { fifo, copyExit };
  };

  test('first SIGTERM finishes the upload and exits 0', async () => {
    const metricsPort = await freePort();
    const daemon = await start(['--metrics-port', String(metricsPort)]);
    const source = new PatternSource();
    const { fifo, copyExit } = await startCopy('dd', 'drain', join(daemon.mountpoint, 'drained.bin'));

    await feed(fifo, source, BEFORE_SIGNAL);
    daemon.process.kill('SIGTERM');
    await waitUntil('the daemon logs the shutdown request', () => daemon.logs().includes('"event":"shutdown-requested"'));

    // While draining, the mount is alive but no longer ready.
    const ready = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.stringify(await ready.json())).toContain('shutting down');
    expect((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status).toBe(200);

    // dd's open file keeps accepting writes until dd closes it.
    await feed(fifo, source, FILE_SIZE - BEFORE_SIGNAL);
    fifo.end();
    expect(await copyExit).toBe(0);

    const status = await daemon.exited;
    expect(status, daemon.logs().slice(-4000)).toBe(0);
    expect(daemon.logs()).not.toContain('were not closed within the shutdown timeout');
    expect(daemon.logs()).toContain('"event":"mount-stopped"');
    expect(isMounted(daemon.mountpoint)).toBe(false);

    expect(await backend.hashObject(BUCKET, 'drained.bin')).toBe(source.hash.digest('hex'));
    expect(await backend.listIncompleteUploads(BUCKET)).toEqual([]);
  });

  test('second SIGTERM aborts the upload', async () => {
    const daemon = await start();
    const source = new PatternSource();
    const { fifo, copyExit } = await startCopy('python', 'abort', join(daemon.mountpoint, 'aborted.bin'));

    await feed(fifo, source, BEFORE_SIGNAL);
    await waitUntil('the multipart upload exists', async () => (await backend.listIncompleteUploads(BUCKET)).includes('aborted.bin'));

    daemon.process.kill('SIGTERM');
    await waitUntil('the daemon logs the shutdown request', () => daemon.logs().includes('"event":"shutdown-requested"'));
    daemon.process.kill('SIGTERM');

    const status = await daemon.exited;
    expect(status, daemon.logs().slice(-4000)).toBe(1);
    expect(daemon.logs()).toContain('"event":"shutdown-forced"');

    // The copier fails on its next write to the dead mount.
    fifo.destroy();
    expect(await copyExit).not.toBe(0);

    expect(await backend.getObject(BUCKET, 'aborted.bin')).toBeUndefined();
    expect(await backend.listIncompleteUploads(BUCKET)).toEqual([]);
  });

  test('busy mount does not block exit', async () => {
    const daemon = await start();
    // A process whose working directory is the mount keeps the FUSE connection open after a lazy unmount.
    const holder = spawn('sleep', ['600'], { cwd: daemon.mountpoint, stdio: 'ignore' });
    children.push(holder);
    await once(holder, 'spawn');

    daemon.process.kill('SIGTERM');
    const status = await daemon.exited;

    expect(status, daemon.logs().slice(-4000)).toBe(0);
    expect(daemon.logs()).toContain('a program still holds a file or directory in it');
    expect(isMounted(daemon.mountpoint)).toBe(false);
  });
});
