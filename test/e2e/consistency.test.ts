/**
 * Read consistency through a real kernel mount while another client replaces
 * the object. A handle opened before the overwrite returns bytes of the old
 * version only, or fails with EIO or ESTALE, and never mixes versions. An
 * open after the metadata TTL reads only the new version.
 *
 * Every 16-byte record of a version is the version letter followed by the
 * record's offset in 15 hexadecimal digits, so a reader can check each chunk
 * against exactly one version at exactly its offset.
 */

import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startBackend, type BackendName, type TestBackend } from './backends.js';
import { python, removeMountpoint, shell, startDaemon } from './daemon.js';

const BACKENDS: BackendName[] = (process.env.BUCKETMOUNT_TEST_BACKENDS ?? 's3,gcs').split(',') as BackendName[];

const MiB = 1024 * 1024;
const OBJECT_SIZE = 48 * MiB;
const RECORD_SIZE = 16;

/** The bytes of one version: records of the version letter and the record's offset in hexadecimal. */
function versionBody(letter: 'A' | 'B', size: number): Buffer {
  const body = Buffer.alloc(size);
  for (let offset = 0; offset < size; offset += RECORD_SIZE) {
    body.write(`${letter}${offset.toString(16).padStart(RECORD_SIZE - 1, '0')}`, offset, 'latin1');
  }
  return body;
}

/** Python helpers shared by both programs: `classify(offset, data)` names the one version `data` belongs to, or "mixed". */
const CLASSIFY = `import errno, json, os, sys
RECORD = ${RECORD_SIZE}
CHUNK = 1 << 20
def expected(letter, offset, length):
    first = offset - offset % RECORD
    records = b"".join(b"%c%015x" % (letter, o) for o in range(first, offset + length, RECORD))
    return records[offset - first:offset - first + length]
def classify(offset, data):
    if not data:
        return "empty"
    for letter in (ord("A"), ord("B")):
        if data == expected(letter, offset, len(data)):
            return chr(letter)
    return "mixed"
`;

/**
 * Opens the file, reads and checks the first MiB, creates `marker`, waits until a line arrives on
 * `fifo`, then reads the rest of the file through the same descriptor in 1 MiB chunks. Prints one
 * JSON list: [offset, version letter or "mixed" or "empty" or errno name] per read.
 */
const READ_ACROSS_OVERWRITE = `${CLASSIFY}
path, marker, fifo, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
results = []
fd = os.open(path, os.O_RDONLY)
# The first MiB arrives in 64 KiB reads, so the daemon sees a sequential reader and may start readahead before the overwrite.
first = b""
while len(first) < CHUNK:
    piece = os.pread(fd, 64 * 1024, len(first))
    if not piece:
        break
    first += piece
results.append([0, classify(0, first)])
open(marker, "w").close()
with open(fifo) as go:
    go.read()
offset = len(first)
while offset < size:
    try:
        data = os.pread(fd, CHUNK, offset)
    except OSError as error:
        results.append([offset, errno.errorcode[error.errno]])
        offset += CHUNK
        continue
    results.append([offset, classify(offset, data)])
    if not data:
        break
    offset += len(data)
os.close(fd)
print(json.dumps(results))
`;

/** Reads the whole file through a fresh descriptor and prints [offset, version] per chunk, plus the size read. */
const READ_FRESH = `${CLASSIFY}
path = sys.argv[1]
results = []
offset = 0
fd = os.open(path, os.O_RDONLY)
while True:
    data = os.read(fd, CHUNK)
    if not data:
        break
    results.append([offset, classify(offset, data)])
    offset += len(data)
os.close(fd)
print(json.dumps({"size": offset, "versions": sorted(set(version for _, version in results))}))
`;

interface Variant {
  name: string;
  args: string[];
  metadataTtlSeconds: number;
  /** Whether the cache is too small to hold the old version, so that reads after the overwrite must reach the store. */
  smallCache: boolean;
}

const VARIANTS: Variant[] = [
  // Two 8 MiB blocks of cache for a 48 MiB object: most of the old version is not prefetched.
  { name: 'small memory limit', args: ['--memory-limit', '16MiB', '--metadata-ttl', '1'], metadataTtlSeconds: 1, smallCache: true },
  { name: 'default settings', args: [], metadataTtlSeconds: 5, smallCache: false },
];

async function waitForFile(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await stat(path);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${path} did not appear within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

describe.each(BACKENDS)('read consistency on %s', (backendName) => {
  const bucket = `bucketmount-consistency-${backendName}`;
  const versionA = versionBody('A', OBJECT_SIZE);
  const versionB = versionBody('B', OBJECT_SIZE);
  let backend: TestBackend;
  let work: string;

  beforeAll(async () => {
    backend = await startBackend(backendName);
    await backend.createBucket(bucket);
    work = await mkdtemp(join(tmpdir(), 'bucketmount-consistency-'));
  }, 120_000);

  afterAll(async () => {
    await backend?.stop();
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  }, 60_000);

  // The kernel drops a file's cached pages when its modification time changes, so the time a
  // listing gives and the time a later HEAD gives must agree.
  test('object time survives the metadata TTL', async () => {
    const key = 'timed.txt';
    await backend.putObject(bucket, key, Buffer.from('timed'));

    const daemon = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...backend.connectionArgs(), '--metadata-ttl', '1'] });
    try {
      expect(await readdir(daemon.mountpoint)).toContain(key);
      const listed = (await stat(join(daemon.mountpoint, key))).mtimeMs;

      await new Promise((resolve) => setTimeout(resolve, 1500));
      const looked = (await stat(join(daemon.mountpoint, key))).mtimeMs;

      expect(looked).toBe(listed);
      expect(listed % 1000).toBe(0);
    } finally {
      const status = await daemon.stop();
      await removeMountpoint(daemon.mountpoint);
      expect(status, daemon.logs().slice(-4000)).toBe(0);
      await backend.deleteObject(bucket, key);
    }
  }, 120_000);

  test.each(VARIANTS)('overwrite while open, $name', async (variant) => {
    const key = `overwritten-${variant.smallCache ? 'small' : 'default'}.bin`;
    await backend.putObject(bucket, key, versionA);

    const daemon = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...backend.connectionArgs(), ...variant.args] });
    const marker = join(work, `${key}.first-mib-read`);
    const fifo = join(work, `${key}.go`);
    try {
      expect((await shell(`mkfifo "${fifo}"`)).status).toBe(0);
      const reader = python(READ_ACROSS_OVERWRITE, [join(daemon.mountpoint, key), marker, fifo, String(OBJECT_SIZE)], 300_000);

      await waitForFile(marker, 60_000);
      await backend.putObject(bucket, key, versionB);
      expect((await shell(`echo go > "${fifo}"`)).status).toBe(0);

      const outcome = await reader;
      expect(outcome.stderr).toBe('');
      const results = JSON.parse(outcome.stdout) as Array<[number, string]>;
      expect(results[0]).toEqual([0, 'A']);

      const outcomes = new Set(results.map(([, result]) => result));
      const unexpected = results.filter(([, result]) => !['A', 'EIO', 'ESTALE'].includes(result));
      expect(unexpected, `reads after the overwrite: ${JSON.stringify(results)}`).toEqual([]);
      if (variant.smallCache) {
        // The old version cannot all be cached, so some read had to ask the store for it and was refused.
        expect(outcomes.has('ESTALE') || outcomes.has('EIO'), JSON.stringify(results)).toBe(true);
      }

      // Attributes, listings and cached versions expire after the metadata TTL, so a new open pins the new version.
      await new Promise((resolve) => setTimeout(resolve, (variant.metadataTtlSeconds + 1) * 1000));
      const fresh = await python(READ_FRESH, [join(daemon.mountpoint, key)], 300_000);
      expect(fresh.stderr).toBe('');
      expect(JSON.parse(fresh.stdout)).toEqual({ size: OBJECT_SIZE, versions: ['B'] });

      expect(daemon.logs()).not.toMatch(/"level":50/);
    } finally {
      const status = await daemon.stop();
      await removeMountpoint(daemon.mountpoint);
      expect(status, daemon.logs().slice(-4000)).toBe(0);
      await backend.deleteObject(bucket, key);
    }
  }, 600_000);
});
