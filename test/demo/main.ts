/**
 * The demonstration behind the README's first command.
 *
 * It starts a local object server and OIDC issuer, seeds a bucket with every
 * file of the vega-datasets npm package plus one generated file over 100 MiB,
 * mounts the bucket with bucketmount using only a token file and a role (or a
 * GCP provider and service account), runs the Python sandbox check against the
 * mount as it would run in a sandbox (the mount bind-mounted at /data in a
 * private mount namespace), verifies the file it wrote through the SDK, then
 * unmounts and stops everything. With --keep it leaves the mount, the
 * servers and the daemon's metrics endpoint running for trying things by
 * hand, until Ctrl-C.
 *
 * Usage: node dist/test/demo/main.js [s3|gcs] [--keep]
 */

import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';

import { startBackend, type BackendName, type TestBackend } from '../e2e/backends.js';
import { freePort } from '../env/ports.js';
import { CLI_PATH, REPOSITORY_ROOT, forceUnmount, startDaemon, type MountedDaemon } from '../e2e/daemon.js';

const BUCKET = 'bucketmount-demo';
const LARGE_FILE_KEY = 'generated/large-150MiB.bin';
const LARGE_FILE_BYTES = 150 * 1024 * 1024;
const DATASETS_DIRECTORY = join(REPOSITORY_ROOT, 'node_modules', 'vega-datasets', 'data');

function step(message: string): void {
  process.stdout.write(`\n==> ${message}\n`);
}

async function listFiles(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

/** Writes a file of random bytes in 1 MiB chunks and returns its SHA-256. */
async function generateLargeFile(path: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const output = createWriteStream(path);
  for (let written = 0; written < size; written += 1024 * 1024) {
    const chunk = randomBytes(Math.min(1024 * 1024, size - written));
    hash.update(chunk);
    if (!output.write(chunk)) await new Promise<void>((resolve) => output.once('drain', () => resolve()));
  }
  await new Promise<void>((resolve, reject) => output.end((error?: Error | null) => (error ? reject(error) : resolve())));
  return hash.digest('hex');
}

async function seedBucket(backend: TestBackend, workDirectory: string): Promise<Record<string, string>> {
  const manifest: Record<string, string> = {};

  for (const path of await listFiles(DATASETS_DIRECTORY)) {
    const key = `vega-datasets/${relative(DATASETS_DIRECTORY, path)}`;
    const body = await readFile(path);
    await backend.putObject(BUCKET, key, body);
    manifest[key] = createHash('sha256').update(body).digest('hex');
  }

  const largePath = join(workDirectory, 'large.bin');
  manifest[LARGE_FILE_KEY] = await generateLargeFile(largePath, LARGE_FILE_BYTES);
  await backend.putFile(BUCKET, LARGE_FILE_KEY, largePath);
  await rm(largePath);

  return manifest;
}

function run(command: string, args: string[], inherit = true): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: inherit ? 'inherit' : 'ignore' });
    child.on('error', () => resolve(127));
    child.on('close', (status) => resolve(status ?? 1));
  });
}

/**
 * Runs the sandbox check with the mount bind-mounted at /data inside a
 * private mount namespace, so the program sees exactly the path a sandbox
 * sees while the host's mount table is untouched. An empty /data directory is
 * created for the bind when the host has none, and removed afterwards. Where
 * unshare(1) is not permitted, the check runs on the mount point itself.
 */
async function runSandboxCheck(mountpoint: string, manifestPath: string, text: string): Promise<number> {
  const script = join(REPOSITORY_ROOT, 'test', 'demo', 'sandbox_check.py');

  if ((await run('unshare', ['--mount', 'true'], false)) !== 0) {
    process.stdout.write(`unshare --mount is not permitted here; running the check on ${mountpoint} directly\n`);
    return run('python3', [script, mountpoint, manifestPath, text]);
  }

  const createdDataDirectory = !existsSync('/data');
  if (createdDataDirectory) await mkdir('/data');
  try {
    const inNamespace = `mount --bind "$1" /data && exec python3 "$2" /data "$3" "$4"`;
    return await run('unshare', ['--mount', '--propagation', 'private', '/bin/sh', '-c', inNamespace, 'sandbox', mountpoint, script, manifestPath, text]);
  } finally {
    if (createdDataDirectory) await rmdir('/data').catch((error: unknown) => process.stdout.write(`could not remove the /data directory created for the check: ${String(error)}\n`));
  }
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilInterrupted(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

const USAGE = `Usage: test/demo.sh [s3|gcs] [--keep]
  s3 (the default) or gcs: the local server to mount.
  --keep: leave the mount and the servers running until Ctrl-C, then print the daemon's log.
`;

async function main(): Promise<number> {
  const argumentsGiven = process.argv.slice(2);
  if (argumentsGiven.includes('--help') || argumentsGiven.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const unknownOption = argumentsGiven.find((argument) => argument.startsWith('-') && argument !== '--keep');
  if (unknownOption !== undefined) {
    process.stderr.write(`unknown option "${unknownOption}"\n${USAGE}`);
    return 2;
  }

  const keep = argumentsGiven.includes('--keep');
  const backendName = (argumentsGiven.find((argument) => !argument.startsWith('-')) ?? 's3') as BackendName;
  if (backendName !== 's3' && backendName !== 'gcs') {
    process.stderr.write(`unknown backend "${backendName}": use s3 or gcs\n${USAGE}`);
    return 2;
  }

  const workDirectory = await mkdtemp(join(tmpdir(), 'bucketmount-demo-'));
  let backend: TestBackend | undefined;
  let daemon: MountedDaemon | undefined;

  try {
    step(`Starting the local ${backendName === 's3' ? 'S3 server (MinIO)' : 'GCS server (fake-gcs-server) and GCP STS and IAM fakes'} and the OIDC issuer on 127.0.0.1`);
    backend = await startBackend(backendName);
    await backend.createBucket(BUCKET);
    process.stdout.write(`token file (kubelet layout): ${backend.tokenFile}\n`);

    step(`Seeding ${backend.bucketUrl(BUCKET)} with the vega-datasets files and a ${LARGE_FILE_BYTES / 1024 / 1024} MiB generated file`);
    const manifest = await seedBucket(backend, workDirectory);
    const manifestPath = join(workDirectory, 'manifest.json');
    await writeFile(manifestPath, JSON.stringify(manifest));
    process.stdout.write(`${Object.keys(manifest).length} objects seeded\n`);

    step('Mounting with bucketmount, authenticated only by the token file');
    const mountpoint = join(workDirectory, 'data');
    const metricsPort = keep ? await freePort() : undefined;
    const args = [...backend.connectionArgs(), ...(metricsPort === undefined ? [] : ['--metrics-port', String(metricsPort)])];
    process.stdout.write(`bucketmount mount ${backend.bucketUrl(BUCKET)} ${mountpoint} ${args.join(' ')}\n`);
    const started = performance.now();
    await mkdir(mountpoint);
    daemon = await startDaemon({ bucketUrl: backend.bucketUrl(BUCKET), mountpoint, args, ownProcessGroup: keep });
    process.stdout.write(`mount ready after ${(performance.now() - started).toFixed(0)} ms\n`);

    step('Running the sandbox check in Python against /data');
    const text = `written through bucketmount at ${new Date().toISOString()} (${randomUUID()})\n`;
    const checkStatus = await runSandboxCheck(mountpoint, manifestPath, text.trim());

    step('Verifying wif-test.txt in the bucket through the SDK, not through the mount');
    const stored = await backend.getObject(BUCKET, 'wif-test.txt');
    const storedOk = stored?.toString() === text.trim();
    process.stdout.write(storedOk ? 'OK the object wif-test.txt holds the bytes the sandbox wrote\n' : `FAILED the object wif-test.txt holds ${stored === undefined ? 'nothing (missing)' : `${stored.length} other bytes`}\n`);

    if (keep) {
      step('Keeping the mount and the servers running (--keep); press Ctrl-C to unmount and stop them');
      process.stdout.write(`mount point: ${mountpoint}\n`);
      process.stdout.write(`metrics: http://127.0.0.1:${metricsPort}/metrics (also /healthz)\n`);
      // A clean environment, as the daemon above has: the machine's CA variables must not reach the plain-HTTP endpoints.
      const secondArgs = args.filter((argument, index, all) => argument !== '--metrics-port' && all[index - 1] !== '--metrics-port');
      process.stdout.write(
        `a second mount of the same bucket:\n  mkdir -p /tmp/second && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin BUCKETMOUNT_NODE=${process.execPath} ${CLI_PATH} mount ${backend.bucketUrl(BUCKET)} /tmp/second ${secondArgs.join(' ')}\n`,
      );
      await untilInterrupted();
    }

    step('Unmounting');
    const exitStatus = await daemon.stop('SIGTERM');
    process.stdout.write(`daemon exited with status ${exitStatus}\n`);
    // A kept mount was used by hand, so its log is worth reading even after a clean exit.
    if (exitStatus !== 0 || keep) process.stdout.write(`daemon output:\n${daemon.logs()}\n`);
    daemon = undefined;

    const passed = checkStatus === 0 && storedOk && exitStatus === 0;
    step(passed ? 'Demonstration passed' : 'Demonstration FAILED');
    return passed ? 0 : 1;
  } finally {
    if (daemon !== undefined) {
      process.stdout.write(`daemon output:\n${daemon.logs()}\n`);
      await daemon.stop('SIGKILL');
    }
    await backend?.stop();

    // Detach any mount left behind before deleting, so rm cannot reach the bucket.
    await forceUnmount(join(workDirectory, 'data'));
    await rm(workDirectory, { recursive: true, force: true });
  }
}

main().then(
  (status) => {
    process.exitCode = status;
  },
  (error: unknown) => {
    process.stderr.write(`demonstration failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
