/**
 * Real kernel mounts of a small in-memory filesystem through the addon. All
 * file calls on the mount run in child processes (python3), so the event
 * loop that answers the requests is never blocked by a caller waiting on it.
 */

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { openSync, closeSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

import { Errno } from '../fs/errno.js';
import { loadNativeAddon, type NativeRequest, type NativeSession } from './native.js';
import { DEFAULT_READ_AHEAD_KIB, FuseSession, MAX_IO_SIZE, type FuseMountOptions, type FuseOperation } from './session.js';
import { MemoryFilesystem, type MemoryFilesystemFaults } from './testing/memory-filesystem.js';
import { ROOT_INODE } from './types.js';

const execFileAsync = promisify(execFile);
const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Upper bound for one child process; a hang fails the test instead of blocking it. */
const CHILD_TIMEOUT_MS = 30_000;
const MOUNT_TEST_TIMEOUT_MS = 90_000;
/** Mounts in the readahead test, each one chance for the INIT order to go wrong. */
const MOUNT_ATTEMPTS = 60;

interface Mounted {
  session: FuseSession;
  filesystem: MemoryFilesystem;
  mountpoint: string;
  logLines: Record<string, unknown>[];
  operationsDone: { op: FuseOperation; errno: number }[];
}

const mountpoints: string[] = [];
const sessions: FuseSession[] = [];
const children: ChildProcess[] = [];

function newMountpoint(): string {
  const directory = mkdtempSync(path.join(tmpdir(), 'bucketmount-fuse-'));
  mountpoints.push(directory);
  return directory;
}

function capturingLogger(lines: Record<string, unknown>[]): pino.Logger {
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) {
        if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      callback();
    },
  });
  return pino({ level: 'debug' }, stream);
}

async function mountMemory(filesystem: MemoryFilesystem, overrides: Partial<FuseMountOptions> = {}): Promise<Mounted> {
  const mountpoint = overrides.mountpoint ?? newMountpoint();
  const logLines: Record<string, unknown>[] = [];
  const operationsDone: { op: FuseOperation; errno: number }[] = [];
  const session = await FuseSession.mount(
    {
      mountpoint,
      fsName: 'memory',
      subtype: 'bucketmount-test',
      allowOther: false,
      readOnly: false,
      debug: false,
      requestTimeoutMs: 20_000,
      maxThreads: 4,
      onOperationDone: (op, errno) => operationsDone.push({ op, errno }),
      ...overrides,
    },
    filesystem,
    capturingLogger(logLines),
  );
  sessions.push(session);
  return { session, filesystem, mountpoint, logLines, operationsDone };
}

/** Runs a Python program in a child process and returns its stdout. */
async function python(program: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('python3', ['-c', program, ...args], { timeout: CHILD_TIMEOUT_MS, killSignal: 'SIGKILL' });
  return stdout;
}

/** Runs `operation` on `path` in a child and returns the errno it failed with, or 0. */
const ERRNO_PROGRAM = `
import os, sys
operation, target = sys.argv[1], sys.argv[2]
try:
    if operation == 'stat': os.stat(target)
    elif operation == 'open': os.close(os.open(target, os.O_RDONLY))
    elif operation == 'rmdir': os.rmdir(target)
    elif operation == 'symlink': os.symlink('/etc/hostname', target)
    elif operation == 'statfs': os.statvfs(target)
    elif operation == 'write':
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(descriptor, b'data')
        os.close(descriptor)
    print(0)
except OSError as error:
    print(error.errno)
`;

async function errnoOfChild(operation: string, target: string): Promise<number> {
  return Number((await python(ERRNO_PROGRAM, operation, target)).trim());
}

function isMounted(mountpoint: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === mountpoint);
}

/** Polls /proc/mounts until `mountpoint` is gone; returns false if it is still there at the deadline. */
async function waitUntilUnmounted(mountpoint: string, deadlineMs: number): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (!isMounted(mountpoint)) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return !isMounted(mountpoint);
}

/** Reads the kernel's readahead window in KiB for the FUSE mount at `mountpoint`. */
function readAheadKibOf(mountpoint: string): string {
  const line = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .findLast((entry) => entry.split(' ')[4] === mountpoint);
  if (line === undefined) throw new Error(`${mountpoint} is missing from /proc/self/mountinfo`);
  return readFileSync(`/sys/class/bdi/${line.split(' ')[2]}/read_ahead_kb`, 'utf8').trim();
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(
    sessions.splice(0).map((session) => Promise.race([session.unmount(), new Promise((resolve) => setTimeout(resolve, 10_000))])),
  );
  for (const mountpoint of mountpoints.splice(0)) {
    if (isMounted(mountpoint)) await execFileAsync('fusermount3', ['-u', '-z', mountpoint]).catch(() => undefined);
    rmSync(mountpoint, { recursive: true, force: true });
  }
});

describe('FuseSession on a real mount', () => {
  it('serves stat, read and statfs', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const filesystem = new MemoryFilesystem();
    filesystem.addFile(ROOT_INODE, 'hello.txt', Buffer.from('hello world\n'));
    const { mountpoint, session } = await mountMemory(filesystem);

    const output = await python(
      `
import os, sys, json
root = sys.argv[1]
info = os.stat(os.path.join(root, 'hello.txt'))
with open(os.path.join(root, 'hello.txt')) as f: text = f.read()
fs = os.statvfs(root)
print(json.dumps({'size': info.st_size, 'mode': info.st_mode, 'text': text, 'blocks': fs.f_blocks, 'namemax': fs.f_namemax}))
`,
      mountpoint,
    );
    const result = JSON.parse(output) as Record<string, unknown>;

    expect(result.size).toBe(12);
    expect(result.mode).toBe(0o100644);
    expect(result.text).toBe('hello world\n');
    expect(result.blocks).toBe(1024);
    expect(result.namemax).toBe(255);
    expect(session.connection.maxWrite).toBe(MAX_IO_SIZE);
    expect(session.connection.readdirplus).toBe(true);
    expect(session.connection.writebackCache).toBe(false);
  });

  it('lists 1500 entries through readdirplus once each', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const filesystem = new MemoryFilesystem();
    const directory = filesystem.addDirectory(ROOT_INODE, 'many');
    const expected: string[] = [];
    for (let i = 0; i < 1500; i += 1) {
      const name = `object-${String(i).padStart(5, '0')}-with-a-longer-name.csv`;
      expected.push(name);
      filesystem.addFile(directory, name, Buffer.alloc(0));
    }
    const { mountpoint } = await mountMemory(filesystem);

    const output = await python('import os, sys, json; print(json.dumps(os.listdir(os.path.join(sys.argv[1], "many"))))', mountpoint);
    const listed = JSON.parse(output) as string[];

    expect(listed.length).toBe(1500);
    expect(new Set(listed).size).toBe(1500);
    expect([...listed].sort()).toEqual(expected);

    const batches = filesystem.readdirBatches.filter((batch) => batch.count > 0);
    expect(batches.every((batch) => batch.plus)).toBe(true);
    expect(batches.length).toBeGreaterThan(2);

    // Every entry the kernel received through readdirplus was accepted exactly once.
    expect(filesystem.acceptedNames.length).toBe(1500);
    expect(new Set(filesystem.acceptedNames).size).toBe(1500);
  });

  it('reads 3 MiB in 1 MiB requests', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const data = randomBytes(3 * MAX_IO_SIZE);
    const filesystem = new MemoryFilesystem({ directIoFiles: new Set(['direct.bin']) });
    filesystem.addFile(ROOT_INODE, 'direct.bin', data);
    filesystem.addFile(ROOT_INODE, 'cached.bin', data);
    const { mountpoint } = await mountMemory(filesystem);

    const program = `
import hashlib, sys
with open(sys.argv[1], 'rb', buffering=0) as f:
    chunks = []
    while True:
        chunk = f.read(4 * 1024 * 1024)
        if not chunk: break
        chunks.append(chunk)
print(hashlib.sha256(b''.join(chunks)).hexdigest())
`;
    const directHash = (await python(program, path.join(mountpoint, 'direct.bin'))).trim();
    expect(directHash).toBe(sha256(data));
    expect(Math.max(...filesystem.readSizes)).toBe(MAX_IO_SIZE);

    filesystem.readSizes.length = 0;
    const cachedHash = (await python(program, path.join(mountpoint, 'cached.bin'))).trim();
    expect(cachedHash).toBe(sha256(data));
    // Buffered reads depend on the readahead window that mount() raised to 1 MiB.
    expect(Math.max(...filesystem.readSizes)).toBe(MAX_IO_SIZE);
  });

  // The kernel applies the INIT reply while libfuse writes it, and that reply
  // caps the readahead window at the 128 KiB the kernel offered. So the
  // window must be raised after the reply, not from the init callback. Busy
  // processes on every core make a wrong order show up within a few mounts.
  it('keeps 1 MiB readahead on every mount', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    for (let core = 0; core < availableParallelism() * 2; core += 1) {
      children.push(spawn('python3', ['-c', 'while True: pass'], { stdio: 'ignore' }));
    }

    const windows: string[] = [];
    for (let attempt = 0; attempt < MOUNT_ATTEMPTS; attempt += 1) {
      const { session, mountpoint } = await mountMemory(new MemoryFilesystem());
      windows.push(readAheadKibOf(mountpoint));
      await session.unmount();
    }

    expect(windows).toEqual(Array.from({ length: MOUNT_ATTEMPTS }, () => String(DEFAULT_READ_AHEAD_KIB)));
  });

  // A file keeps the readahead window it saw when it was opened, so the
  // window must be raised before the first request after INIT is served. A
  // child that stats the mount point in a loop sends that first request as
  // soon as the kernel lets it through.
  it('raises readahead before serving requests', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const firstWindows: string[] = [];
    for (let attempt = 0; attempt < 10; attempt += 1) {
      const mountpoint = newMountpoint();
      const parentDevice = statSync(mountpoint).dev;
      const poller = spawn('python3', ['-c', `import os, sys\nwhile os.stat(sys.argv[1]).st_dev == ${parentDevice}: pass`, mountpoint], { stdio: 'ignore' });
      children.push(poller);

      let firstWindow: string | undefined;
      const filesystem = new MemoryFilesystem();
      const getattr = filesystem.getattr.bind(filesystem);
      filesystem.getattr = (ino) => {
        firstWindow ??= readAheadKibOf(mountpoint);
        return getattr(ino);
      };

      const { session } = await mountMemory(filesystem, { mountpoint });
      await once(poller, 'exit');
      firstWindows.push(firstWindow ?? 'no getattr');
      await session.unmount();
    }

    expect(firstWindows).toEqual(Array.from({ length: 10 }, () => String(DEFAULT_READ_AHEAD_KIB)));
  });

  // Read replies of 64 KiB and more go through the addon's reply thread, and
  // smaller ones are written at once. Pieces of 60 KiB + 7 bytes make large
  // replies of more than 16 pieces, written from JavaScript memory with one
  // writev. Pieces of 61 bytes make large replies of more than 64 pieces, which
  // the addon copies into one buffer, and small replies of more than 1023
  // pieces, which it joins before it writes them.
  for (const pieceBytes of [undefined, 60 * 1024 + 7, 61]) {
    const form = pieceBytes === undefined ? 'one buffer' : `pieces of ${pieceBytes} bytes`;
    it(`concurrent reads of every size (${form})`, { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
      const sizes = [0, 1, 4095, 4096, 61 * 1023, 63_000, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 100_000, 128 * 1024, 300_007, 3 * MAX_IO_SIZE + 12_345];
      const files = new Map<string, Buffer>();
      for (const size of sizes) {
        files.set(`cached-${size}.bin`, randomBytes(size));
        files.set(`direct-${size}.bin`, randomBytes(size));
      }
      const directNames = new Set([...files.keys()].filter((name) => name.startsWith('direct-')));
      const filesystem = new MemoryFilesystem({ directIoFiles: directNames, readPieceBytes: pieceBytes });
      for (const [name, data] of files) filesystem.addFile(ROOT_INODE, name, data);
      const { mountpoint } = await mountMemory(filesystem);

      // Each reader thread starts at another file and reads with its own request size, so replies of every size overlap.
      const output = await python(
        `
import hashlib, json, os, sys, threading
root, names, readers = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
chunk_sizes = [4096, 65536, 100000, 135168, 1 << 20]
results = [None] * readers
def read_all(index):
    hashes = {}
    start = index % len(names)
    for name in names[start:] + names[:start]:
        digest = hashlib.sha256()
        with open(os.path.join(root, name), 'rb', buffering=0) as f:
            while True:
                chunk = f.read(chunk_sizes[index % len(chunk_sizes)])
                if not chunk: break
                digest.update(chunk)
        hashes[name] = digest.hexdigest()
    results[index] = hashes
threads = [threading.Thread(target=read_all, args=(index,)) for index in range(readers)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps(results))
`,
        mountpoint,
        JSON.stringify([...files.keys()]),
        '12',
      );
      const results = JSON.parse(output) as (Record<string, string> | null)[];

      expect(results).toHaveLength(12);
      const expected = Object.fromEntries([...files].map(([name, data]) => [name, sha256(data)]));
      for (const hashes of results) expect(hashes).toEqual(expected);
      expect(filesystem.readSizes.some((size) => size >= 64 * 1024)).toBe(true);
      expect(filesystem.readSizes.some((size) => size < 64 * 1024)).toBe(true);
    });
  }

  it('unmounts during large reads', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const mountpoint = newMountpoint();
    // The daemon runs in a child, so that a teardown that hangs fails the test instead of blocking this process.
    const daemon = spawn(process.execPath, ['--import', 'tsx', path.join(repositoryRoot, 'src/fuse/testing/unmount-child.ts'), mountpoint, '200'], {
      cwd: repositoryRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
      timeout: CHILD_TIMEOUT_MS,
      killSignal: 'SIGKILL',
    });
    children.push(daemon);
    let daemonOutput = '';
    daemon.stdout!.on('data', (chunk: Buffer) => {
      daemonOutput += chunk.toString();
    });
    const daemonExited = once(daemon, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    while (!daemonOutput.includes('\n') && daemon.exitCode === null && daemon.signalCode === null) await new Promise((resolve) => setTimeout(resolve, 10));
    const expectedHash = /^ready ([0-9a-f]{64})\n/.exec(daemonOutput)?.[1];
    expect(expectedHash).toBeDefined();

    // Eight threads read the file in 1 MiB requests, pass after pass, until a read fails or 200 passes are done.
    // The daemon unmounts after 200 requests, about 3 passes of each thread.
    const { stdout } = await execFileAsync(
      'python3',
      [
        '-c',
        `
import hashlib, json, sys, threading
path, expected = sys.argv[1], sys.argv[2]
outcomes = [None] * 8
def read_passes(index):
    passes, mismatches = 0, 0
    try:
        with open(path, 'rb', buffering=0) as f:
            while passes < 200:
                f.seek(0)
                digest = hashlib.sha256()
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk: break
                    digest.update(chunk)
                passes += 1
                if digest.hexdigest() != expected: mismatches += 1
        outcomes[index] = {'passes': passes, 'mismatches': mismatches, 'errno': 0}
    except OSError as error:
        outcomes[index] = {'passes': passes, 'mismatches': mismatches, 'errno': error.errno}
threads = [threading.Thread(target=read_passes, args=(index,)) for index in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps(outcomes))
`,
        path.join(mountpoint, 'big.bin'),
        expectedHash!,
      ],
      { timeout: CHILD_TIMEOUT_MS, killSignal: 'SIGKILL' },
    );

    const [code, signal] = await daemonExited;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    expect(daemonOutput).toContain('closed\n');
    expect(isMounted(mountpoint)).toBe(false);

    const outcomes = JSON.parse(stdout) as { passes: number; mismatches: number; errno: number }[];
    expect(outcomes).toHaveLength(8);
    for (const outcome of outcomes) {
      expect(outcome.mismatches).toBe(0);
      // The session closes the connection, so reads still waiting fail. A reader that finished 200 passes first has errno 0.
      expect([0, Errno.ENOTCONN, Errno.ECONNABORTED, Errno.EIO]).toContain(outcome.errno);
    }
    expect(outcomes.some((outcome) => outcome.errno !== 0)).toBe(true);
    expect(outcomes.some((outcome) => outcome.passes > 0)).toBe(true);
  });

  it('writes a new file in requests of up to 1 MiB', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const filesystem = new MemoryFilesystem();
    const { mountpoint } = await mountMemory(filesystem);
    const data = randomBytes(2.5 * MAX_IO_SIZE);
    const sourceDirectory = newMountpoint();
    const source = path.join(sourceDirectory, 'source.bin');
    await import('node:fs/promises').then((fs) => fs.writeFile(source, data));

    await python(
      `
import sys
data = open(sys.argv[1], 'rb').read()
with open(sys.argv[2], 'wb', buffering=0) as f:
    f.write(data)
`,
      source,
      path.join(mountpoint, 'written.bin'),
    );

    const written = filesystem.contentOf(ROOT_INODE, 'written.bin');
    expect(written).toBeDefined();
    expect(sha256(written!)).toBe(sha256(data));
    expect(Math.max(...filesystem.writeSizes)).toBe(MAX_IO_SIZE);
  });

  // The session lends pooled buffers for write data and takes each back when
  // its write finished. Slow writes keep several in flight, so a buffer taken
  // back too early would be filled by another writer before it is copied.
  it('reuses write buffers without mixing writers', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const filesystem = new MemoryFilesystem({ slowWriteMs: 20 });
    const { mountpoint } = await mountMemory(filesystem);
    const contents = [randomBytes(4 * MAX_IO_SIZE), randomBytes(4 * MAX_IO_SIZE), randomBytes(4 * MAX_IO_SIZE)];
    const sourceDirectory = newMountpoint();
    const program = `
import sys
data = open(sys.argv[1], 'rb').read()
with open(sys.argv[2], 'wb', buffering=0) as f:
    for start in range(0, len(data), 1024 * 1024):
        f.write(data[start:start + 1024 * 1024])
`;

    await Promise.all(
      contents.map(async (data, index) => {
        const source = path.join(sourceDirectory, `source-${index}.bin`);
        await import('node:fs/promises').then((fs) => fs.writeFile(source, data));
        await python(program, source, path.join(mountpoint, `written-${index}.bin`));
      }),
    );

    for (const [index, data] of contents.entries()) {
      expect(sha256(filesystem.contentOf(ROOT_INODE, `written-${index}.bin`)!)).toBe(sha256(data));
    }
    const writes = filesystem.writeMemory.length;
    const distinct = new Set(filesystem.writeMemory).size;
    expect(writes).toBe(12);
    expect(distinct).toBeGreaterThan(1);
    expect(distinct).toBeLessThan(writes);
  });

  it('answers an unanswered request after the deadline', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const filesystem = new MemoryFilesystem({ hangingLookups: new Set(['hang']) });
    filesystem.addFile(ROOT_INODE, 'hello.txt', Buffer.from('hello\n'));
    const { mountpoint, logLines, operationsDone } = await mountMemory(filesystem, { requestTimeoutMs: 1_000 });

    const error = await errnoOfChild('stat', path.join(mountpoint, 'hang'));
    expect(error).toBe(Errno.ETIMEDOUT);

    const timeoutLog = logLines.find((line) => line.msg === 'filesystem operation did not finish before the request deadline; the kernel got ETIMEDOUT');
    expect(timeoutLog?.op).toBe('lookup');
    expect(operationsDone).toContainEqual({ op: 'lookup', errno: Errno.ETIMEDOUT });

    // The late result is dropped without an exception, and the mount keeps working.
    expect(filesystem.releaseHangingLookups()).toBe(1);
    await new Promise((resolve) => setImmediate(resolve));
    expect(logLines.some((line) => line.msg === 'dropped a reply that arrived after the request deadline')).toBe(true);
    expect(await errnoOfChild('stat', path.join(mountpoint, 'hello.txt'))).toBe(0);
  });

  for (const renewed of [true, false]) {
    it(`a close slower than the deadline ${renewed ? 'succeeds while the flush renews it' : 'fails with ETIMEDOUT without renewals'}`, { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
      // The flush takes 2.5 deadlines; renewals every 0.3 deadlines keep it alive.
      const filesystem = new MemoryFilesystem({ slowFlush: { durationMs: 2_500, renewEveryMs: renewed ? 300 : undefined } });
      const { mountpoint, operationsDone } = await mountMemory(filesystem, { requestTimeoutMs: 1_000 });

      const error = await errnoOfChild('write', path.join(mountpoint, 'large.bin'));

      expect(error).toBe(renewed ? 0 : Errno.ETIMEDOUT);
      expect(operationsDone).toContainEqual({ op: 'flush', errno: renewed ? 0 : Errno.ETIMEDOUT });
    });
  }

  it('propagates ENOENT, EACCES, ENOTEMPTY and EPERM', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const filesystem = new MemoryFilesystem({ deniedOpens: new Set(['secret.txt']) });
    filesystem.addFile(ROOT_INODE, 'secret.txt', Buffer.from('secret\n'));
    const full = filesystem.addDirectory(ROOT_INODE, 'full');
    filesystem.addFile(full, 'child.txt', Buffer.from('x'));
    const { mountpoint, logLines } = await mountMemory(filesystem);

    expect(await errnoOfChild('stat', path.join(mountpoint, 'missing.txt'))).toBe(Errno.ENOENT);
    expect(await errnoOfChild('open', path.join(mountpoint, 'secret.txt'))).toBe(Errno.EACCES);
    expect(await errnoOfChild('rmdir', path.join(mountpoint, 'full'))).toBe(Errno.ENOTEMPTY);
    expect(await errnoOfChild('symlink', path.join(mountpoint, 'link'))).toBe(Errno.EPERM);

    const failures = logLines.filter((line) => line.msg === 'filesystem operation failed');
    const levelOf = (op: string): unknown => failures.find((line) => line.op === op)?.level;
    expect(levelOf('lookup')).toBe(20);
    expect(levelOf('open')).toBe(40);
    expect(levelOf('rmdir')).toBe(20);
  });

  it('repeated failures warn once per interval', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const filesystem = new MemoryFilesystem({ deniedOpens: new Set(['secret.txt']) });
    filesystem.addFile(ROOT_INODE, 'secret.txt', Buffer.from('secret\n'));
    const { mountpoint, logLines } = await mountMemory(filesystem);

    for (let attempt = 0; attempt < 5; attempt += 1) {
      expect(await errnoOfChild('open', path.join(mountpoint, 'secret.txt'))).toBe(Errno.EACCES);
    }

    const failures = logLines.filter((line) => line.msg === 'filesystem operation failed' && line.op === 'open');
    expect(failures).toHaveLength(5);
    expect(failures.filter((line) => line.level === 40)).toHaveLength(1);
    expect(failures.filter((line) => line.level === 20)).toHaveLength(4);
  });

  it('unmounts idempotently', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const { session, mountpoint } = await mountMemory(new MemoryFilesystem());
    expect(isMounted(mountpoint)).toBe(true);

    await Promise.all([session.unmount(), session.unmount()]);
    await session.unmount();

    expect(isMounted(mountpoint)).toBe(false);
    await expect(session.closed).resolves.toBeUndefined();
  });

  it('closes when unmounted from outside', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const { session, mountpoint } = await mountMemory(new MemoryFilesystem());

    await execFileAsync('fusermount3', ['-u', mountpoint]);

    await session.closed;
    expect(isMounted(mountpoint)).toBe(false);
  });

  it('serves a /dev/fuse descriptor mounted elsewhere', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const mountpoint = newMountpoint();
    const descriptor = openSync('/dev/fuse', 'r+');
    try {
      // The child plays the privileged helper: it mounts with the descriptor it inherited as fd 3.
      const helper = spawn(
        'python3',
        [
          '-c',
          `
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
options = b'fd=3,rootmode=40000,user_id=0,group_id=0'
if libc.mount(b'memory', sys.argv[1].encode(), b'fuse.bucketmount-test', 6, options) != 0:
    raise OSError(ctypes.get_errno(), 'mount failed')
`,
          mountpoint,
        ],
        { stdio: ['ignore', 'inherit', 'inherit', descriptor], timeout: CHILD_TIMEOUT_MS },
      );
      const [code] = (await once(helper, 'exit')) as [number | null];
      expect(code).toBe(0);
      expect(isMounted(mountpoint)).toBe(true);

      const filesystem = new MemoryFilesystem();
      filesystem.addFile(ROOT_INODE, 'hello.txt', Buffer.from('hello\n'));
      const session = await FuseSession.mount(
        { mountpoint: `/dev/fd/${descriptor}`, fsName: 'memory', subtype: 'bucketmount-test', allowOther: false, readOnly: false, debug: false, requestTimeoutMs: 20_000, maxThreads: 2 },
        filesystem,
        capturingLogger([]),
      );
      sessions.push(session);

      expect((await python('import sys; print(open(sys.argv[1]).read(), end="")', path.join(mountpoint, 'hello.txt')))).toBe('hello\n');

      // The helper owns the mount point: unmounting it ends the session.
      await execFileAsync('umount', ['-l', mountpoint]);
      await session.closed;
    } finally {
      // libfuse closed the descriptor in fuse_session_destroy when the session got that far.
      try {
        closeSync(descriptor);
      } catch {
        // Already closed by libfuse.
      }
    }
  });

  /** Starts src/fuse/testing/mount-child.ts at a new mount point and resolves once it serves. */
  async function startMountChild(...options: string[]): Promise<{ child: ChildProcess; mountpoint: string }> {
    const mountpoint = newMountpoint();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repositoryRoot, 'src/fuse/testing/mount-child.ts'), mountpoint, ...options], {
      cwd: repositoryRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);

    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('ready')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`mount child exited with ${code} before it was ready`)));
    });
    expect(isMounted(mountpoint)).toBe(true);
    expect(await python('import sys; print(open(sys.argv[1]).read(), end="")', path.join(mountpoint, 'hello.txt'))).toBe('hello\n');
    return { child, mountpoint };
  }

  async function killChild(child: ChildProcess): Promise<void> {
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }

  it('detaches a dead mount left at the mount point when it mounts there', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    // Without auto_unmount nothing removes the mount of a killed daemon, so the dead mount is certain.
    const { child, mountpoint } = await startMountChild('--no-auto-unmount');
    await killChild(child);
    expect(isMounted(mountpoint)).toBe(true);
    expect(await errnoOfChild('statfs', mountpoint)).toBe(Errno.ENOTCONN);

    const filesystem = new MemoryFilesystem();
    filesystem.addFile(ROOT_INODE, 'second.txt', Buffer.from('second\n'));
    const mounted = await mountMemory(filesystem, { mountpoint });

    expect(mounted.logLines.some((line) => String(line.msg).includes('dead FUSE mount'))).toBe(true);
    expect(await python('import sys; print(open(sys.argv[1]).read(), end="")', path.join(mountpoint, 'second.txt'))).toBe('second\n');
    await mounted.session.unmount();
    await mounted.session.closed;
    expect(await waitUntilUnmounted(mountpoint, 10_000)).toBe(true);
  });

  it('leaves no dead mount after kill -9', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const { child, mountpoint } = await startMountChild();
    await killChild(child);

    // libfuse's auto_unmount helper usually removes the mount at once. It keeps it when its own check of
    // the mount point fails with ECONNABORTED instead of ENOTCONN (18 of 60 kills with the CPUs busy),
    // and then the next mount at the same place detaches it.
    if (!(await waitUntilUnmounted(mountpoint, 10_000))) {
      const mounted = await mountMemory(new MemoryFilesystem(), { mountpoint });
      expect(mounted.logLines.some((line) => String(line.msg).includes('dead FUSE mount'))).toBe(true);
      await mounted.session.unmount();
      await mounted.session.closed;
      expect(await waitUntilUnmounted(mountpoint, 10_000)).toBe(true);
    }

    const { stdout } = await execFileAsync('stat', ['-c', '%F', mountpoint], { timeout: CHILD_TIMEOUT_MS });
    expect(stdout.trim()).toBe('directory');
  });
});

describe('native allocation threshold', () => {
  it('accepts 2 MiB and rejects sizes out of range', () => {
    const addon = loadNativeAddon();
    // glibc, which this machine runs, has the setting.
    expect(addon.setLargeAllocationThreshold(2 * 1024 * 1024)).toBe(true);
    expect(() => addon.setLargeAllocationThreshold(1)).toThrow(/4096 to 32 MiB/);
    expect(() => addon.setLargeAllocationThreshold(64 * 1024 * 1024)).toThrow(/4096 to 32 MiB/);
  });
});

describe('native reply methods', () => {
  it('validate request handles and reply kinds', { timeout: MOUNT_TEST_TIMEOUT_MS }, async () => {
    const mountpoint = newMountpoint();
    const getattrRequests: NativeRequest[] = [];
    let session: NativeSession | undefined;
    let resolveExit!: () => void;
    const exited = new Promise<void>((resolve) => {
      resolveExit = resolve;
    });
    let resolveInit!: () => void;
    const initialised = new Promise<void>((resolve) => {
      resolveInit = resolve;
    });
    let resolveGetattr!: () => void;
    const gotGetattr = new Promise<void>((resolve) => {
      resolveGetattr = resolve;
    });

    session = loadNativeAddon().mount(
      {
        mountpoint,
        fsName: 'native-test',
        subtype: 'bucketmount-test',
        allowOther: false,
        readOnly: false,
        defaultPermissions: false,
        autoUnmount: true,
        debug: false,
        maxIoSize: MAX_IO_SIZE,
        maxThreads: 2,
        maxBackground: 16,
        congestionThreshold: 12,
        requestTimeoutMs: 20_000,
        readAheadKib: 0,
      },
      {
        request: (request) => {
          if (request.op === 'getattr') {
            getattrRequests.push(request);
            resolveGetattr();
          } else if (request.op === 'forget' || request.op === 'forgetMulti') {
            session!.replyNone(request.id);
          } else {
            session!.replyError(request.id, Errno.ENOSYS);
          }
        },
        init: () => resolveInit(),
        timeout: () => undefined,
        log: () => undefined,
        destroy: () => undefined,
        exit: () => resolveExit(),
      },
    );
    await initialised;

    const statResult = python('import os, sys; print(oct(os.stat(sys.argv[1]).st_mode))', mountpoint);
    await gotGetattr;
    const id = getattrRequests[0]!.id;
    const now = Date.now();
    const attr = { ino: 1, mode: 0o40755, nlink: 2, uid: 0, gid: 0, size: 0, atimeMs: now, mtimeMs: now, ctimeMs: now };

    expect(() => session.replyOpen(id, { fh: 1 })).toThrow(/cannot answer a getattr request/);
    expect(() => session.replyAttr(id, { ...attr, size: -1 }, 1)).toThrow(TypeError);
    expect(() => session.replyError(id, 0)).toThrow(/cannot answer a getattr request/);
    expect(() => session.replyAttr(id + 1, attr, 1)).toThrow(/unknown or was already answered/);
    expect(() => session.replyBuffer(id, [Buffer.alloc(1), 'x' as unknown as Uint8Array])).toThrow(TypeError);
    expect(() => session.replyBuffer(id, [Buffer.alloc(MAX_IO_SIZE), Buffer.alloc(1)])).toThrow(/no longer than the negotiated max_read/);
    expect(() => session.replyBuffer(id, [Buffer.alloc(1)])).toThrow(/cannot answer a getattr request/);
    expect(session.replyAttr(id, attr, 1)).toBe(true);
    expect(() => session.replyAttr(id, attr, 1)).toThrow(/unknown or was already answered/);
    expect(() => session.replyError(Number.NaN, 5)).toThrow(TypeError);
    expect(() => session.replyError.call({}, id, 5)).toThrow(TypeError);

    expect((await statResult).trim()).toBe('0o40755');

    session.unmount();
    session.unmount();
    await exited;
    expect(session.state).toBe('closed');
    expect(isMounted(mountpoint)).toBe(false);
  });
});
