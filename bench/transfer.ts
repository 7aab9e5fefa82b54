/**
 * A first transfer benchmark: 1 GiB written and read with `dd` through a
 * bucketmount mount, next to the same transfer done with the SDK against the
 * same local server (the ceiling).
 *
 * The SDK side uses the same concurrency as the mount's defaults: uploads with
 * @aws-sdk/lib-storage (8 MiB parts, 8 in flight) and downloads as parallel
 * 8 MiB ranged GETs, 8 in flight. Each transfer runs once after a warm-up of
 * the server, so numbers vary by a few percent between runs.
 *
 * Usage: node dist/bench/transfer.js [s3|gcs] [size in MiB, default 1024]
 */

import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { startBackend, type BackendName, type TestBackend } from '../test/e2e/backends.js';
import { shell, startDaemon } from '../test/e2e/daemon.js';

const MiB = 1024 * 1024;

function rate(bytes: number, milliseconds: number): string {
  return `${((bytes / MiB) / (milliseconds / 1000)).toFixed(0)} MiB/s`;
}

async function timed<T>(action: () => Promise<T>): Promise<{ value: T; milliseconds: number }> {
  const started = performance.now();
  const value = await action();
  return { value, milliseconds: performance.now() - started };
}

/** Downloads an object as parallel ranged GETs, `concurrency` in flight, hashing in order. */
async function sdkParallelRead(backend: TestBackend, bucket: string, key: string, size: number, blockSize: number, concurrency: number): Promise<string> {
  const hash = createHash('sha256');
  const blocks = Math.ceil(size / blockSize);
  const inFlight = new Map<number, Promise<Buffer>>();
  let nextToFetch = 0;

  for (let index = 0; index < blocks; index += 1) {
    while (nextToFetch < blocks && inFlight.size < concurrency) {
      const start = nextToFetch * blockSize;
      inFlight.set(nextToFetch, backend.getRange(bucket, key, start, Math.min(size, start + blockSize)));
      nextToFetch += 1;
    }
    const block = await (inFlight.get(index) as Promise<Buffer>);
    inFlight.delete(index);
    hash.update(block);
  }
  return hash.digest('hex');
}

async function main(): Promise<void> {
  const backendName = (process.argv[2] ?? 's3') as BackendName;
  const sizeMiB = Number(process.argv[3] ?? 1024);
  const bytes = sizeMiB * MiB;
  const bucket = 'bucketmount-bench';

  const work = await mkdtemp(join(tmpdir(), 'bucketmount-bench-'));
  const backend = await startBackend(backendName);
  try {
    await backend.createBucket(bucket);
    const source = join(work, 'source.bin');
    await shell(`head -c ${bytes} /dev/urandom > "${source}"`, 600_000);
    const sourceHash = (await shell(`sha256sum < "${source}"`)).stdout.split(' ')[0];
    const size = (await stat(source)).size;

    const sdkWrite = await timed(() => backend.putFile(bucket, 'sdk.bin', source));
    const sdkRead = await timed(() => sdkParallelRead(backend, bucket, 'sdk.bin', size, 8 * MiB, 8));
    if (sdkRead.value !== sourceHash) throw new Error('the SDK read back different bytes');

    const daemon = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: backend.connectionArgs() });
    try {
      const mountWrite = await timed(() => shell(`dd if="${source}" of="${daemon.mountpoint}/mount.bin" bs=1M status=none`, 900_000));
      if (mountWrite.value.status !== 0) throw new Error(`dd write failed: ${mountWrite.value.stderr}`);

      const mountRead = await timed(() => shell(`dd if="${daemon.mountpoint}/sdk.bin" of=/dev/null bs=1M status=none`, 900_000));
      if (mountRead.value.status !== 0) throw new Error(`dd read failed: ${mountRead.value.stderr}`);

      const storedHash = await backend.hashObject(bucket, 'mount.bin');
      const hashOk = storedHash === sourceHash;

      const rows = [
        ['transfer', 'SDK (ceiling)', 'bucketmount dd', 'ratio'],
        ['write', rate(size, sdkWrite.milliseconds), rate(size, mountWrite.milliseconds), (sdkWrite.milliseconds / mountWrite.milliseconds).toFixed(2)],
        ['read (cold)', rate(size, sdkRead.milliseconds), rate(size, mountRead.milliseconds), (sdkRead.milliseconds / mountRead.milliseconds).toFixed(2)],
      ];
      process.stdout.write(`\n${backendName}: ${sizeMiB} MiB, local server on 127.0.0.1\n`);
      for (const row of rows) process.stdout.write(`| ${row.join(' | ')} |\n`);
      process.stdout.write(`object written through the mount has the source's SHA-256: ${hashOk}\n`);
      await daemon.stop();
    } finally {
      await daemon.stop('SIGKILL');
    }
  } finally {
    await backend.stop();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`benchmark failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
