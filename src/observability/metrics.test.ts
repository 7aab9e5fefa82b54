import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';

import { BlockCache } from '../cache/block-cache.js';
import { InstrumentedStore } from '../store/instrumented.js';
import { MemoryStore } from '../store/memory.js';
import { errnoName } from '../fuse/session.js';
import { MountMetrics, errnoLabel, statusClassOf } from './metrics.js';
import { startOperationsServer, type OperationsServer } from './operations-server.js';

const silent = pino({ level: 'silent' });

/** Returns the value of one series, such as 'bucketmount_read_bytes_total' or 'name{label="x"}'. */
async function valueOf(metrics: MountMetrics, series: string): Promise<number | undefined> {
  const text = await metrics.registry.metrics();
  const line = text.split('\n').find((entry) => entry.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('MountMetrics', () => {
  it('keeps registries of two mounts apart', async () => {
    const first = new MountMetrics();
    const second = new MountMetrics();
    first.bytesRead(10);
    second.bytesRead(3);

    expect(await valueOf(first, 'bucketmount_read_bytes_total')).toBe(10);
    expect(await valueOf(second, 'bucketmount_read_bytes_total')).toBe(3);
  });

  it('groups uncommon errno values as other', async () => {
    const metrics = new MountMetrics();
    metrics.operationDone('lookup', 2, 1, errnoName);
    metrics.operationDone('read', 0, 2, errnoName);
    metrics.operationDone('read', 71, 2, errnoName);

    expect(await valueOf(metrics, 'bucketmount_fuse_operation_errors_total{operation="lookup",errno="ENOENT"}')).toBe(1);
    expect(await valueOf(metrics, 'bucketmount_fuse_operation_errors_total{operation="read",errno="other"}')).toBe(1);
    expect(await valueOf(metrics, 'bucketmount_fuse_operation_duration_seconds_count{operation="read"}')).toBe(2);
    expect(errnoLabel(5, errnoName)).toBe('EIO');
  });

  it('reads statistics and credential state at scrape time', async () => {
    const metrics = new MountMetrics();
    let hits = 1;
    metrics.observeFilesystem(
      () => ({ inodes: 4, openHandles: 2, openWriters: 1, uploadBufferBytes: 8, blockCache: { hits, misses: 2, evictions: 3, cachedBytes: 100, cachedBlocks: 1 } }),
      1024,
    );
    metrics.observeCredentials(() => ({ expiration: new Date(2_000_000_000_000), consecutiveFailures: 0, totalRenewals: 5, totalFailures: 1 }));

    expect(await valueOf(metrics, 'bucketmount_block_cache_hits_total')).toBe(1);
    hits = 7;
    expect(await valueOf(metrics, 'bucketmount_block_cache_hits_total')).toBe(7);
    expect(await valueOf(metrics, 'bucketmount_block_cache_evictions_total')).toBe(3);
    expect(await valueOf(metrics, 'bucketmount_files_open_for_writing')).toBe(1);
    expect(await valueOf(metrics, 'bucketmount_memory_budget_bytes')).toBe(1024);
    expect(await valueOf(metrics, 'bucketmount_credentials_expiry_timestamp_seconds')).toBe(2_000_000_000);
    expect(await valueOf(metrics, 'bucketmount_credential_renewals_total')).toBe(5);
    expect(await valueOf(metrics, 'bucketmount_credential_renewal_failures_total')).toBe(1);
  });

  it('maps HTTP statuses to classes', () => {
    expect(statusClassOf(404)).toBe('4xx');
    expect(statusClassOf(503)).toBe('5xx');
    expect(statusClassOf(undefined)).toBe('none');
  });
});

describe('InstrumentedStore', () => {
  it('counts requests, outcomes, bytes and uploads', async () => {
    const metrics = new MountMetrics();
    const store = new InstrumentedStore(new MemoryStore({ bucket: 'metrics-test' }), metrics);

    await store.put('a', Buffer.from('hello'));
    await store.get('a');
    await expect(store.head('missing')).rejects.toThrow();
    const uploadId = await store.createMultipartUpload('big');
    expect(await valueOf(metrics, 'bucketmount_multipart_uploads_in_progress')).toBe(1);
    const part = await store.uploadPart('big', uploadId, 1, Buffer.alloc(3));
    await store.completeMultipartUpload('big', uploadId, [part]);

    expect(await valueOf(metrics, 'bucketmount_multipart_uploads_in_progress')).toBe(0);
    expect(await valueOf(metrics, 'bucketmount_store_request_duration_seconds_count{operation="put",code="ok",status_class="2xx"}')).toBe(1);
    expect(await valueOf(metrics, 'bucketmount_store_request_duration_seconds_count{operation="head",code="NotFound",status_class="4xx"}')).toBe(1);
    expect(await valueOf(metrics, 'bucketmount_store_transferred_bytes_total{direction="upload"}')).toBe(8);
    expect(await valueOf(metrics, 'bucketmount_store_transferred_bytes_total{direction="download"}')).toBe(5);
    expect(await valueOf(metrics, 'bucketmount_store_requests_in_flight{operation="get"}')).toBe(0);
  });
});

describe('BlockCache evictions', () => {
  it('counts least recently used drops only', async () => {
    const cache = new BlockCache({ maxBytes: 10 });
    const fetch = async (start: number, end: number) => Buffer.alloc(end - start);
    await cache.read({ key: 'k', version: '1', index: 0 }, 0, 6, fetch);
    await cache.read({ key: 'k', version: '1', index: 1 }, 0, 6, fetch);
    cache.clear();

    expect(cache.getStatistics().evictions).toBe(1);
  });
});

describe('operations server', () => {
  let server: OperationsServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('serves metrics and health answers', async () => {
    const metrics = new MountMetrics();
    metrics.bytesWritten(42);
    let credentialsValid = true;
    server = await startOperationsServer({
      port: 0,
      address: '127.0.0.1',
      registries: () => [metrics.registry],
      liveness: [{ name: 'fuse-session', run: () => ({ ok: true, detail: 'serving' }) }],
      readiness: [{ name: 'credentials', run: () => ({ ok: credentialsValid, detail: credentialsValid ? 'valid' : 'expired' }) }],
      logger: silent,
    });
    const base = `http://127.0.0.1:${server.port}`;

    expect(await (await fetch(`${base}/metrics`)).text()).toContain('bucketmount_written_bytes_total 42');
    expect((await fetch(`${base}/readyz`)).status).toBe(200);

    credentialsValid = false;
    const notReady = await fetch(`${base}/readyz`);
    expect(notReady.status).toBe(503);
    expect(await notReady.json()).toEqual({
      status: 'failing',
      checks: [
        { name: 'fuse-session', ok: true, detail: 'serving' },
        { name: 'credentials', ok: false, detail: 'expired' },
      ],
    });
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });

  it('reports a port in use', async () => {
    const options = { address: '127.0.0.1', registries: () => [], liveness: [], readiness: [], logger: silent };
    server = await startOperationsServer({ ...options, port: 0 });
    await expect(startOperationsServer({ ...options, port: server.port })).rejects.toThrow(/choose another --metrics-port/);
  });
});
