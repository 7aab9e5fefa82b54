/**
 * Starts the cached fake-gcs-server binary on loopback as the GCS server of
 * the tests.
 *
 * The server runs with `-scheme http -backend memory`, so nothing it stores
 * outlives the process, and with `-public-host` and `-external-url` set to its
 * own loopback address, so that any URL it returns (resumable upload sessions,
 * `selfLink`, `mediaLink`) points back at 127.0.0.1 and never at
 * storage.googleapis.com.
 *
 * Tests do not talk to this server directly: `gcs-auth-proxy.ts` sits in front
 * of it and checks bearer tokens. `createBucket` is the exception, because
 * creating buckets is setup done with the emulator's own authority.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

import { serverBinary } from './paths.js';
import { freePort } from './ports.js';

const STARTUP_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const OUTPUT_TAIL_CHARACTERS = 8_000;
// A port picked by freePort() can be taken by another process before the
// server binds it; a few fresh ports make that race harmless.
const START_ATTEMPTS = 3;

export interface FakeGcsServer {
  /** `http://127.0.0.1:PORT`, the JSON API root (`/storage/v1`, `/upload/storage/v1`). */
  endpoint: string;
  port: number;
  /** Creates a bucket through the JSON API, without authentication. */
  createBucket(name: string): Promise<void>;
  /** Deletes every object of every bucket, keeping the buckets. */
  deleteAllObjects(): Promise<void>;
  /** The last lines the server printed, for failure messages. */
  outputTail(): string;
  /** Stops the server; idempotent. */
  stop(): Promise<void>;
}

/** Starts fake-gcs-server on a free port of 127.0.0.1 and waits until its health check succeeds. */
export async function startFakeGcs(): Promise<FakeGcsServer> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    try {
      return await startOnce(await freePort());
    } catch (error) {
      lastError = error;
    }
  }
  throw new Error(`fake-gcs-server did not start after ${START_ATTEMPTS} attempts`, { cause: lastError });
}

async function startOnce(port: number): Promise<FakeGcsServer> {
  const binary = serverBinary('fake-gcs-server');
  const address = `127.0.0.1:${port}`;
  const endpoint = `http://${address}`;

  const child = spawn(
    binary,
    [
      '-scheme', 'http',
      '-backend', 'memory',
      '-host', '127.0.0.1',
      '-port', String(port),
      '-public-host', address,
      '-external-url', endpoint,
      '-log-level', 'warn',
    ],
    // Go's soft memory limit makes the collector return the memory of deleted objects: without it the
    // server passed 11 GB of RSS in the benchmark's 10 GiB memory check, each 1 GiB object deleted after use.
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GOMEMLIMIT: '4GiB' } },
  );

  let output = '';
  const appendOutput = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARACTERS);
  };
  child.stdout.on('data', appendOutput);
  child.stderr.on('data', appendOutput);

  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });

  try {
    await waitUntilReady(endpoint, () => exited, () => output);
  } catch (error) {
    await stopChild(child, exit, () => exited);
    throw error;
  }

  const request = async (method: string, path: string, body?: unknown): Promise<void> => {
    const response = await fetch(`${endpoint}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) {
      throw new Error(`fake-gcs-server ${method} ${path} failed with HTTP ${response.status}: ${text}`);
    }
  };

  return {
    endpoint,
    port,
    createBucket: (name) => request('POST', '/storage/v1/b', { name }),
    deleteAllObjects: () => request('POST', '/_internal/delete_all'),
    outputTail: () => output,
    stop: () => stopChild(child, exit, () => exited),
  };
}

/** Polls the health check until it returns 200, the process exits, or the startup timeout passes. */
async function waitUntilReady(endpoint: string, hasExited: () => boolean, output: () => string): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let lastError: unknown;

  while (Date.now() < deadline) {
    if (hasExited()) {
      throw new Error(`fake-gcs-server exited during startup; its output:\n${output()}`);
    }
    try {
      const response = await fetch(`${endpoint}/_internal/healthcheck`);
      await response.arrayBuffer();
      if (response.ok) return;
      lastError = new Error(`health check returned HTTP ${response.status}`);
    } catch (error) {
      // Connection refused until the server has bound its port.
      lastError = error;
    }
    await sleep(50);
  }
  throw new Error(`fake-gcs-server at ${endpoint} was not ready within ${STARTUP_TIMEOUT_MS} ms; its output:\n${output()}`, {
    cause: lastError,
  });
}

async function stopChild(child: ChildProcess, exit: Promise<void>, hasExited: () => boolean): Promise<void> {
  if (hasExited()) return;

  child.kill('SIGTERM');
  const stopped = await Promise.race([exit.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
  if (!stopped) {
    child.kill('SIGKILL');
    await exit;
  }
}
