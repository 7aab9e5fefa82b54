/**
 * The metrics and health endpoint of a real mount on MinIO: /metrics counts
 * reads and writes done through the kernel, and /readyz follows the
 * credentials, failing while they are expired and passing again after a
 * renewal.
 *
 * Credentials expire on purpose: MinIO's temporary credentials expire with
 * the web identity token they came from, so the daemon starts with a token
 * that lives 25 seconds, and reaches MinIO's STS through a TCP forwarder that
 * the test stops. Renewal then fails until the test writes a fresh token and
 * starts the forwarder again on the same port.
 */

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { startS3Backend, type TestBackend } from './backends.js';
import { python, removeMountpoint, startDaemon, type MountedDaemon } from './daemon.js';
import { freePort } from '../env/ports.js';

const BUCKET = 'bucketmount-observability';
const SHORT_TOKEN_SECONDS = 25;
/** Longest wait for a state change that depends on credential expiry and renewal backoff. */
const STATE_CHANGE_TIMEOUT_MS = 120_000;

/** A loopback TCP forwarder that can be stopped and started again on the same port. */
class TcpForwarder {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  async start(): Promise<void> {
    const server = createServer((client) => {
      const upstream = createConnection({ host: '127.0.0.1', port: this.targetPort });
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

interface HealthAnswer {
  status: number;
  body: { status: string; checks: { name: string; ok: boolean; detail: string }[] };
}

/** Parses the Prometheus text format into series (name with labels) and values. */
function parseMetrics(text: string): Map<string, number> {
  const series = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const separator = line.lastIndexOf(' ');
    series.set(line.slice(0, separator), Number(line.slice(separator + 1)));
  }
  return series;
}

/** Sums every series of a metric whose labels contain all of `labels` (such as 'operation="read"'). */
function sumOf(series: Map<string, number>, name: string, ...labels: string[]): number {
  let total = 0;
  for (const [key, value] of series) {
    const metric = key.split('{')[0];
    if (metric === name && labels.every((label) => key.includes(label))) total += value;
  }
  return total;
}

describe('metrics and health endpoint on s3', () => {
  let backend: TestBackend;
  let forwarder: TcpForwarder;
  let daemon: MountedDaemon;
  let base: string;
  let scratch: string;

  const health = async (path: '/healthz' | '/readyz'): Promise<HealthAnswer> => {
    const response = await fetch(`${base}${path}`);
    return { status: response.status, body: (await response.json()) as HealthAnswer['body'] };
  };

  /** Polls `path` until it answers `status`; fails with the last answer at the deadline. */
  const waitForStatus = async (path: '/healthz' | '/readyz', status: number): Promise<HealthAnswer> => {
    const deadline = Date.now() + STATE_CHANGE_TIMEOUT_MS;
    let answer = await health(path);
    while (answer.status !== status && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      answer = await health(path);
    }
    expect(answer.status, `${path} answered ${JSON.stringify(answer.body)}`).toBe(status);
    return answer;
  };

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-observability-'));
    backend = await startS3Backend();
    await backend.createBucket(BUCKET);
    await backend.putObject(BUCKET, 'input.bin', randomBytes(3 * 1024 * 1024 + 17));

    const args = backend.connectionArgs();
    const minioPort = Number(new URL(args[args.indexOf('--endpoint') + 1]!).port);
    forwarder = new TcpForwarder(await freePort(), minioPort);
    await forwarder.start();
    args[args.indexOf('--sts-endpoint') + 1] = `http://127.0.0.1:${forwarder.port}`;

    await backend.writeToken({ expiresInSeconds: SHORT_TOKEN_SECONDS });
    const metricsPort = await freePort();
    base = `http://127.0.0.1:${metricsPort}`;
    daemon = await startDaemon({ bucketUrl: backend.bucketUrl(BUCKET), args: [...args, '--metrics-port', String(metricsPort)] });
  });

  afterAll(async () => {
    const status = await daemon?.stop();
    if (daemon !== undefined) await removeMountpoint(daemon.mountpoint);
    await forwarder?.stop();
    await backend?.stop();
    await rm(scratch, { recursive: true, force: true });
    expect(status).toBe(0);
  });

  test('metrics count reads, writes and credentials', async () => {
    const written = randomBytes(5 * 1024 * 1024 + 3);
    const source = join(scratch, 'source.bin');
    await writeFile(source, written);
    const program = `
import sys
root = sys.argv[1]
with open(root + '/input.bin', 'rb') as f: data = f.read()
with open(sys.argv[2], 'rb') as source, open(root + '/output.bin', 'wb') as f: f.write(source.read())
print(len(data))
`;
    const result = await python(program, [daemon.mountpoint, source]);
    expect(result.stderr).toBe('');
    expect(Number(result.stdout.trim())).toBe(3 * 1024 * 1024 + 17);
    expect(createHash('sha256').update((await backend.getObject(BUCKET, 'output.bin'))!).digest('hex')).toBe(createHash('sha256').update(written).digest('hex'));

    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const series = parseMetrics(await response.text());

    expect(sumOf(series, 'bucketmount_read_bytes_total')).toBeGreaterThanOrEqual(3 * 1024 * 1024 + 17);
    expect(sumOf(series, 'bucketmount_written_bytes_total')).toBe(written.length);
    expect(sumOf(series, 'bucketmount_fuse_operation_duration_seconds_count', 'operation="read"')).toBeGreaterThan(0);
    expect(sumOf(series, 'bucketmount_fuse_operation_duration_seconds_count', 'operation="write"')).toBeGreaterThan(0);
    expect(sumOf(series, 'bucketmount_store_request_duration_seconds_count', 'operation="get"', 'code="ok"', 'status_class="2xx"')).toBeGreaterThan(0);
    expect(sumOf(series, 'bucketmount_store_transferred_bytes_total', 'direction="download"')).toBeGreaterThanOrEqual(3 * 1024 * 1024 + 17);
    expect(sumOf(series, 'bucketmount_store_transferred_bytes_total', 'direction="upload"')).toBeGreaterThanOrEqual(written.length);
    expect(sumOf(series, 'bucketmount_block_cache_misses_total')).toBeGreaterThan(0);
    expect(sumOf(series, 'bucketmount_multipart_uploads_in_progress')).toBe(0);
    expect(sumOf(series, 'bucketmount_credential_renewals_total')).toBeGreaterThanOrEqual(1);
    expect(sumOf(series, 'bucketmount_credentials_expiry_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000);
    expect(sumOf(series, 'bucketmount_memory_budget_bytes')).toBeGreaterThan(0);
    expect(sumOf(series, 'bucketmount_process_resident_memory_bytes')).toBeGreaterThan(0);
    // A lookup of a missing name is an ENOENT error with a bounded label.
    expect([...series.keys()].filter((key) => key.startsWith('bucketmount_fuse_operation_errors_total')).every((key) => /errno="E[A-Z]+"|errno="other"/.test(key))).toBe(true);

    const ready = await health('/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks.map((check) => check.name)).toEqual(['fuse-session', 'shutdown', 'credentials']);
  });

  test('re-reading an unchanged file comes from the page cache', async () => {
    const program = `
import hashlib, sys
with open(sys.argv[1], 'rb') as f: print(hashlib.sha256(f.read()).hexdigest())
`;
    const operationCount = async (operation: string) =>
      sumOf(parseMetrics(await (await fetch(`${base}/metrics`)).text()), 'bucketmount_fuse_operation_duration_seconds_count', `operation="${operation}"`);

    const first = await python(program, [join(daemon.mountpoint, 'input.bin')]);
    expect(first.stderr).toBe('');
    const flushesAfterFirst = await operationCount('flush');
    const opensAfterFirst = await operationCount('open');

    // The open pins the version the first read cached, so the kernel keeps its pages and sends no
    // read. The page cache of a test VM also shrinks now and then with plenty of memory free (seen
    // on the 2-core VM these tests run on), so one of three re-reads in a row must send no read.
    let rereads = 0;
    let rereadsWithoutReads = 0;
    while (rereads < 3 && rereadsWithoutReads === 0) {
      const readsBefore = await operationCount('read');
      const again = await python(program, [join(daemon.mountpoint, 'input.bin')]);
      rereads += 1;
      expect(again.stdout).toBe(first.stdout);
      if ((await operationCount('read')) === readsBefore) rereadsWithoutReads += 1;
    }
    expect(rereadsWithoutReads).toBe(1);

    // A read-only open replies FOPEN_NOFLUSH, so the kernel sends no FLUSH at close.
    expect(await operationCount('open')).toBe(opensAfterFirst + rereads);
    expect(await operationCount('flush')).toBe(flushesAfterFirst);
  });

  test('readiness follows credential expiry and renewal', async () => {
    // Renewals go through the forwarder; without it they fail until the credentials expire.
    await forwarder.stop();

    const expired = await waitForStatus('/readyz', 503);
    const credentials = expired.body.checks.find((check) => check.name === 'credentials');
    expect(credentials?.ok).toBe(false);
    expect(credentials?.detail).toMatch(/expired/);

    // Liveness does not depend on credentials: the mount still serves, with EACCES or EIO on the bucket.
    expect((await health('/healthz')).status).toBe(200);

    const failures = parseMetrics(await (await fetch(`${base}/metrics`)).text());
    expect(sumOf(failures, 'bucketmount_credential_renewal_failures_total')).toBeGreaterThan(0);
    expect(sumOf(failures, 'bucketmount_credentials_expiry_timestamp_seconds')).toBeLessThanOrEqual(Date.now() / 1000);

    await backend.writeToken({ expiresInSeconds: 3600 });
    await forwarder.start();

    const renewed = await waitForStatus('/readyz', 200);
    expect(renewed.body.checks.every((check) => check.ok)).toBe(true);
    const after = parseMetrics(await (await fetch(`${base}/metrics`)).text());
    expect(sumOf(after, 'bucketmount_credentials_expiry_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000);

    // The renewed credentials work for the bucket again.
    const listing = await python('import os, sys; print(sorted(os.listdir(sys.argv[1])))', [daemon.mountpoint]);
    expect(listing.stdout).toContain('input.bin');
  });

  test('unknown paths and methods are rejected', async () => {
    expect((await fetch(`${base}/nothing`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
  });
});
