/**
 * A large file written and read back through the mount while the fault
 * proxy in front of the storage server answers 10 % of the requests with 503
 * (S3 SlowDown, GCS backendError) and resets or cuts short a few more. The
 * program using the mount must see no error, the object must hold exactly
 * the bytes written, the bytes read back must match, and no incomplete
 * multipart upload may remain.
 *
 * On GCS, responses are cut short only on downloads: the storage client's
 * transport notices a cut JSON response of an upload only through its
 * request timeout (60 s by default, see GcsStore `requestTimeoutMs`), which
 * test/store/fault-retries.test.ts covers with a short timeout.
 *
 * BUCKETMOUNT_FAULTS_FILE_MIB sets the file size: 128 by default, 1024 for
 * the closing measurement.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startFaultProxy, type FaultProxy } from '../env/fault-proxy.js';
import { startBackend, type BackendName, type TestBackend } from './backends.js';
import { removeMountpoint, shell, startDaemon, type MountedDaemon } from './daemon.js';

const BACKENDS: BackendName[] = (process.env.BUCKETMOUNT_TEST_BACKENDS ?? 's3,gcs').split(',') as BackendName[];
const FILE_MIB = Number(process.env.BUCKETMOUNT_FAULTS_FILE_MIB ?? '128');

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

describe.each(BACKENDS)('storage faults on %s', (backendName) => {
  const bucket = `bucketmount-faults-${backendName}`;
  let backend: TestBackend;
  let proxy: FaultProxy;
  let daemon: MountedDaemon | undefined;
  let scratch: string;

  beforeAll(async () => {
    backend = await startBackend(backendName);
    await backend.createBucket(bucket);
    const args = backend.connectionArgs();
    proxy = await startFaultProxy({
      upstream: args[args.indexOf('--endpoint') + 1]!,
      flavor: backendName === 's3' ? 's3' : 'gcs',
      seed: backendName === 's3' ? 101 : 202,
      appliesTo: (method, path, kind) => backendName === 's3' || kind !== 'truncate' || (method === 'GET' && path.includes('alt=media')),
    });
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-faults-'));
  }, 180_000);

  afterAll(async () => {
    if (daemon !== undefined) {
      await daemon.stop('SIGKILL').catch(() => undefined);
      await removeMountpoint(daemon.mountpoint);
    }
    await proxy?.stop();
    await backend?.stop();
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  }, 120_000);

  test('large file round trip under 503s, resets and cut bodies', async () => {
    const source = join(scratch, 'source.bin');
    await shell(`head -c ${FILE_MIB}M /dev/urandom > '${source}'`);
    const expected = await sha256OfFile(source);

    const args = backend.connectionArgs();
    args[args.indexOf('--endpoint') + 1] = proxy.endpoint;
    // The memory budget is far below the file size, so the read back comes from the server, not the block cache.
    // Blocks of 1 MiB make many GETs, so that some of them meet each kind of fault.
    daemon = await startDaemon({ bucketUrl: backend.bucketUrl(bucket), args: [...args, '--memory-limit', '64MiB', '--block-size', '1MiB', '--max-readahead', '16MiB'] });
    const mnt = daemon.mountpoint;

    proxy.setFaults({ throttleRate: 0.1, resetRate: 0.03, truncateRate: 0.03 });
    const write = await shell(`dd if='${source}' of='${mnt}/large.bin' bs=1M status=none`, 900_000);
    expect(write.status, `${write.stderr}\ndaemon output:\n${daemon.logs().slice(-6000)}`).toBe(0);
    expect(write.stderr).toBe('');

    const read = await shell(`sha256sum '${mnt}/large.bin'`, 900_000);
    expect(read.status, `${read.stderr}\ndaemon output:\n${daemon.logs().slice(-6000)}`).toBe(0);
    expect(read.stdout.split(' ')[0]).toBe(expected);
    proxy.clearFaults();

    expect(await backend.hashObject(bucket, 'large.bin')).toBe(expected);
    expect(await backend.listIncompleteUploads(bucket)).toEqual([]);

    const counters = proxy.counters();
    console.info(`${backendName}: ${FILE_MIB} MiB through the fault proxy: ${JSON.stringify(counters)}`);
    expect(counters.throttled).toBeGreaterThan(0);
    expect(counters.resetsInBody + counters.resetsBeforeHeaders).toBeGreaterThan(0);
    expect(counters.truncated).toBeGreaterThan(0);

    expect(await daemon.stop()).toBe(0);
    daemon = undefined;
  }, 900_000);
});
