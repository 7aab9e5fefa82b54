/**
 * The daemon under a 512 MiB cgroup memory limit: it derives its memory
 * budget from the limit, then reads a 2 GiB object and writes a 2 GiB file
 * through the mount without reaching the limit (no OOM kill, peak usage
 * below the limit).
 *
 * The test creates a child cgroup under its own memory cgroup: on cgroup v2
 * when the memory controller is there, otherwise on the cgroup v1 memory
 * hierarchy (hybrid hosts keep the memory controller on v1). A wrapper shell
 * moves itself into the child and then executes the daemon, so only the
 * daemon is charged; the reading and writing programs run outside.
 *
 * Sizes: BUCKETMOUNT_TEST_MEMORY_FILE_MIB (default 2048) for quicker runs.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startS3Backend, type TestBackend } from './backends.js';
import { CLI_PATH, daemonEnvironment, python, removeMountpoint } from './daemon.js';

const BUCKET = 'bucketmount-memory';
const MiB = 1024 * 1024;
const LIMIT_BYTES = 512 * MiB;
const FILE_SIZE = Number(process.env.BUCKETMOUNT_TEST_MEMORY_FILE_MIB ?? 2048) * MiB;
const READY_TIMEOUT_MS = 60_000;

interface MemoryCgroup {
  directory: string;
  version: 1 | 2;
}

/** Finds where this process's memory cgroup lives: v2 when its memory controller is enabled there, else v1. */
async function ownMemoryCgroup(): Promise<{ parent: string; version: 1 | 2 }> {
  const entries = (await readFile('/proc/self/cgroup', 'utf8')).split('\n').filter((line) => line !== '');
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((line) => line.split(' '));
  const mountOf = (fstype: string, option?: string): string | undefined =>
    mounts.find((fields) => {
      const separator = fields.indexOf('-');
      return separator > 0 && fields[separator + 1] === fstype && (option === undefined || (fields[separator + 3] ?? '').split(',').includes(option));
    })?.[4];

  const unified = entries.find((line) => line.startsWith('0::'));
  const version2 = mountOf('cgroup2');
  if (unified !== undefined && version2 !== undefined) {
    const parent = join(version2, unified.slice(3));
    const controllers = await readFile(join(parent, 'cgroup.subtree_control'), 'utf8').catch(() => '');
    if (controllers.split(/\s+/).includes('memory')) return { parent, version: 2 };
  }

  const memory = entries.find((line) => line.split(':')[1]?.split(',').includes('memory'));
  const version1 = mountOf('cgroup', 'memory');
  if (memory !== undefined && version1 !== undefined) return { parent: join(version1, memory.split(':')[2] ?? '/'), version: 1 };

  throw new Error(
    `no writable memory cgroup: /proc/self/cgroup is ${JSON.stringify(entries)}, and neither cgroup v2 with the memory controller in cgroup.subtree_control nor a cgroup v1 memory hierarchy is mounted`,
  );
}

async function createMemoryCgroup(): Promise<MemoryCgroup> {
  const { parent, version } = await ownMemoryCgroup();
  const directory = join(parent, `bucketmount-test-${randomBytes(4).toString('hex')}`);
  await mkdir(directory);
  await writeFile(join(directory, version === 2 ? 'memory.max' : 'memory.limit_in_bytes'), String(LIMIT_BYTES));
  return { directory, version };
}

async function oomKills(cgroup: MemoryCgroup): Promise<number> {
  const text = await readFile(join(cgroup.directory, cgroup.version === 2 ? 'memory.events' : 'memory.oom_control'), 'utf8');
  const match = /^oom_kill (\d+)$/m.exec(text);
  if (match === null) throw new Error(`no oom_kill line in the cgroup's events: ${text}`);
  return Number(match[1]);
}

/** Peak memory charged to the cgroup, or undefined when the kernel does not report it (memory.peak needs Linux 5.19). */
async function peakUsage(cgroup: MemoryCgroup): Promise<number | undefined> {
  const file = join(cgroup.directory, cgroup.version === 2 ? 'memory.peak' : 'memory.max_usage_in_bytes');
  try {
    await access(file);
  } catch {
    return undefined;
  }
  return Number((await readFile(file, 'utf8')).trim());
}

/** A reproducible pseudo-random stream of `size` bytes, hashed as it is produced. */
function patternStream(size: number, hash: ReturnType<typeof createHash>): Readable {
  const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 3), Buffer.alloc(16, 0));
  const zeros = Buffer.alloc(MiB);
  let produced = 0;
  return new Readable({
    read() {
      if (produced >= size) {
        this.push(null);
        return;
      }
      const length = Math.min(MiB, size - produced);
      const chunk = cipher.update(length === MiB ? zeros : Buffer.alloc(length));
      hash.update(chunk);
      produced += length;
      this.push(chunk);
    },
  });
}

describe('memory limit from the cgroup on s3', () => {
  let backend: TestBackend;
  let cgroup: MemoryCgroup;
  let daemon: ChildProcess | undefined;
  let mountpoint: string;
  let logs = '';
  let expectedReadHash: string;

  beforeAll(async () => {
    backend = await startS3Backend();
    await backend.createBucket(BUCKET);

    // The object to read, staged in a local file and uploaded by the test process (outside the cgroup).
    const hash = createHash('sha256');
    const staged = join(await mkdtemp(join(tmpdir(), 'bucketmount-memory-')), 'large-input.bin');
    await pipeline(patternStream(FILE_SIZE, hash), createWriteStream(staged));
    expectedReadHash = hash.digest('hex');
    await backend.putFile(BUCKET, 'large-input.bin', staged);
    await rm(dirname(staged), { recursive: true, force: true });

    cgroup = await createMemoryCgroup();
    mountpoint = await mkdtemp(join(tmpdir(), 'bucketmount-memory-mnt-'));

    // The wrapper joins the cgroup, then becomes the daemon: no --memory-limit, so the budget derives from the cgroup.
    const child = spawn(
      '/bin/sh',
      ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup.directory, CLI_PATH, 'mount', backend.bucketUrl(BUCKET), mountpoint, ...backend.connectionArgs()],
      { env: daemonEnvironment(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    daemon = child;
    child.stdout.on('data', (chunk: Buffer) => (logs += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (logs += chunk.toString()));

    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!logs.includes('"event":"mount-ready"')) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the daemon did not become ready; its output:\n${logs}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  afterAll(async () => {
    if (daemon !== undefined && daemon.exitCode === null) {
      const exited = new Promise((resolve) => daemon!.once('exit', resolve));
      daemon.kill('SIGTERM');
      await exited;
    }
    if (mountpoint !== undefined) await removeMountpoint(mountpoint);
    if (cgroup !== undefined) await rmdir(cgroup.directory);
    await backend?.stop();
  });

  test('budget derives from the cgroup limit', () => {
    const line = logs.split('\n').find((entry) => entry.includes('"event":"memory-budget"'));
    expect(line).toBeDefined();
    const budget = JSON.parse(line!) as { source: string; containerLimitBytes: number; budgetBytes: number };
    expect(budget.source).toBe('cgroup');
    expect(budget.containerLimitBytes).toBe(LIMIT_BYTES);
    expect(budget.budgetBytes).toBe(((LIMIT_BYTES - 200 * MiB) / 2) | 0);
  });

  test('2 GiB read and write stay within the limit', { timeout: 900_000 }, async () => {
    const read = await python(
      `
import hashlib, sys
digest = hashlib.sha256()
with open(sys.argv[1], 'rb', buffering=0) as f:
    while True:
        chunk = f.read(1024 * 1024)
        if not chunk: break
        digest.update(chunk)
print(digest.hexdigest())
`,
      [join(mountpoint, 'large-input.bin')],
      600_000,
    );
    expect(read.stderr).toBe('');
    expect(read.stdout.trim()).toBe(expectedReadHash);

    const write = await python(
      `
import hashlib, os, sys
size = int(sys.argv[2])
block = bytearray(os.urandom(1024 * 1024))
digest = hashlib.sha256()
with open(sys.argv[1], 'wb') as f:
    written, counter = 0, 0
    while written < size:
        block[0:8] = counter.to_bytes(8, 'little')
        chunk = bytes(block[: min(len(block), size - written)])
        f.write(chunk)
        digest.update(chunk)
        written += len(chunk)
        counter += 1
print(digest.hexdigest())
`,
      [join(mountpoint, 'large-output.bin'), String(FILE_SIZE)],
      600_000,
    );
    expect(write.stderr).toBe('');
    expect(await backend.hashObject(BUCKET, 'large-output.bin')).toBe(write.stdout.trim());

    expect(daemon?.exitCode).toBeNull();
    expect(await oomKills(cgroup)).toBe(0);
    const peak = await peakUsage(cgroup);
    if (peak !== undefined) expect(peak).toBeLessThan(LIMIT_BYTES);
    console.info(`memory-limit test: cgroup v${cgroup.version} peak ${peak === undefined ? 'not reported' : `${(peak / MiB).toFixed(1)} MiB`} for ${FILE_SIZE / MiB} MiB read and written`);
  });
});
