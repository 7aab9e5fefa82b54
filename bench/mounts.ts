/**
 * Starting and stopping the mounts under test: bucketmount and the peers.
 *
 * Every mount process gets an explicit environment (PATH, HOME and what the
 * mount needs), never this process's: the machine may set AWS_CA_BUNDLE and
 * other CA variables, and rclone, for one, rejects a plain-HTTP endpoint while
 * AWS_CA_BUNDLE is set.
 *
 * A mount is ready when its mount point appears in /proc/self/mountinfo. The
 * first listing is a readdir of the mount point right after that.
 */

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import { BUILT_CLI_PATH, CLI_PATH } from '../test/e2e/daemon.js';
import type { GcsEnvironment, S3Environment } from './servers.js';
import { GCS_BUCKET, S3_BUCKET } from './servers.js';

const execFileAsync = promisify(execFile);

const MOUNT_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 120_000;
const OUTPUT_TAIL_CHARACTERS = 6_000;

export interface RunningMount {
  target: string;
  mountpoint: string;
  pid: number;
  /** Milliseconds from spawn until the mount point appeared in mountinfo. */
  readyMs: number;
  /** Milliseconds from spawn until the first readdir of the mount point returned. */
  firstListMs: number;
  /** Last lines the mount process printed. */
  output(): string;
  /** Unmounts and waits for the process to exit. */
  stop(): Promise<void>;
}

export interface MountTarget {
  name: string;
  backend: 's3' | 'gcs';
  /** A reason when the peer is not installed; the target is then skipped. */
  unavailable?: string;
  version: string;
  /** Authentication method of the mount, for the report. */
  credentials: string;
  /** Bytes the server sent through this mount's counting proxy, when that is not the SDK ceiling's proxy. */
  serverBytes?: () => number;
  /** `extraArgs` go to bucketmount's command line; the peers take none. */
  mount(extraArgs?: string[]): Promise<RunningMount>;
}

function isMounted(mountpoint: string): boolean {
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  return mountinfo.split('\n').some((line) => line.split(' ')[4] === mountpoint);
}

async function fusermountUnmount(mountpoint: string, lazy: boolean): Promise<void> {
  try {
    await execFileAsync('fusermount3', lazy ? ['-u', '-z', mountpoint] : ['-u', mountpoint]);
  } catch {
    // Not mounted any more.
  }
}

interface SpawnMountOptions {
  target: string;
  command: string;
  args: string[];
  environment: Record<string, string>;
  mountpoint: string;
  /** bucketmount unmounts itself on SIGTERM; the peers are unmounted with fusermount3 -u. */
  stopWithSignal: boolean;
  cleanup?: () => Promise<void>;
}

async function spawnMount(options: SpawnMountOptions): Promise<RunningMount> {
  const started = performance.now();
  const child: ChildProcess = spawn(options.command, options.args, { env: options.environment, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const append = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARACTERS);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);

  let exitStatus: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitStatus = signal === null ? `status ${code}` : `signal ${signal}`;
      resolve();
    });
    child.once('error', (error) => {
      exitStatus = `spawn error: ${error.message}`;
      resolve();
    });
  });

  const stop = async (): Promise<void> => {
    if (exitStatus === undefined) {
      if (options.stopWithSignal) child.kill('SIGTERM');
      else await fusermountUnmount(options.mountpoint, false);
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    await fusermountUnmount(options.mountpoint, true);
    await rm(options.mountpoint, { recursive: true, force: true }).catch(() => undefined);
    await options.cleanup?.();
  };

  const deadline = started + MOUNT_TIMEOUT_MS;
  while (!isMounted(options.mountpoint)) {
    if (exitStatus !== undefined || performance.now() > deadline) {
      const reason = exitStatus === undefined ? `not mounted after ${MOUNT_TIMEOUT_MS} ms` : `exited with ${exitStatus}`;
      await stop();
      throw new Error(`${options.target} ${reason} before the mount was ready; its output: ${output.trim().slice(-1500)}`);
    }
    await sleep(2);
  }
  const readyMs = performance.now() - started;
  await readdir(options.mountpoint);
  const firstListMs = performance.now() - started;

  if (child.pid === undefined) throw new Error(`${options.target} has no process id`);
  return { target: options.target, mountpoint: options.mountpoint, pid: child.pid, readyMs, firstListMs, output: () => output, stop };
}

function baseEnvironment(): Record<string, string> {
  // BUCKETMOUNT_NODE makes bucketmount's launcher run this Node.js; the peers ignore it.
  return { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: process.env.HOME ?? '/root', BUCKETMOUNT_NODE: process.execPath };
}

async function newMountpoint(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'bucketmount-bench-mnt-'));
}

export interface PeerBinaries {
  benchBin: string;
  versions: Record<string, string>;
}

/** Returns why a peer is unavailable (the installer's NAME.skip file or a missing binary), or undefined. */
function unavailableReason(binary: string, skipFile: string): string | undefined {
  if (existsSync(skipFile)) return readFileSync(skipFile, 'utf8').trim();
  if (!existsSync(binary)) return `${binary} not found; run test/env/install.sh --bench`;
  return undefined;
}

export function s3Targets(environment: S3Environment, peers: PeerBinaries): MountTarget[] {
  const { minio, proxy } = environment;
  const rootKey = { accessKeyId: minio.rootUser, secretAccessKey: minio.rootPassword };
  const rootCredentials = 'MinIO root access key (it has no option for a web identity token file)';

  const bucketmount: MountTarget = {
    name: 'bucketmount',
    backend: 's3',
    version: peers.versions.bucketmount ?? 'unknown',
    unavailable: existsSync(BUILT_CLI_PATH) ? undefined : `${BUILT_CLI_PATH} not built; run npm run build`,
    credentials: 'web identity token file through MinIO STS AssumeRoleWithWebIdentity',
    mount: async (extraArgs = []) => {
      const mountpoint = await newMountpoint();
      return spawnMount({
        target: 'bucketmount',
        command: CLI_PATH,
        args: [
          'mount', `s3://${S3_BUCKET}`, mountpoint,
          '--endpoint', proxy.endpoint,
          '--sts-endpoint', minio.endpoint,
          '--region', minio.region,
          '--token-file', environment.tokenFile,
          '--role-arn', minio.roleArn,
          ...extraArgs,
        ],
        environment: baseEnvironment(),
        mountpoint,
        stopWithSignal: true,
      });
    },
  };

  const s3fsBinary = '/usr/bin/s3fs';
  const s3fs: MountTarget = {
    name: 's3fs',
    backend: 's3',
    version: peers.versions.s3fs ?? 'unknown',
    unavailable: unavailableReason(s3fsBinary, join(peers.benchBin, 's3fs.skip')),
    credentials: rootCredentials,
    mount: async () => {
      const mountpoint = await newMountpoint();
      const work = await mkdtemp(join(tmpdir(), 'bucketmount-bench-s3fs-'));
      const passwordFile = join(work, 'passwd');
      await writeFile(passwordFile, `${rootKey.accessKeyId}:${rootKey.secretAccessKey}\n`);
      await chmod(passwordFile, 0o600);
      return spawnMount({
        target: 's3fs',
        command: s3fsBinary,
        args: [
          S3_BUCKET, mountpoint, '-f',
          '-o', `url=${proxy.endpoint}`,
          '-o', 'use_path_request_style',
          '-o', `endpoint=${minio.region}`,
          '-o', `passwd_file=${passwordFile}`,
          '-o', 'dbglevel=warn',
        ],
        environment: baseEnvironment(),
        mountpoint,
        stopWithSignal: false,
        cleanup: () => rm(work, { recursive: true, force: true }),
      });
    },
  };

  const rcloneBinary = '/usr/bin/rclone';
  const rclone: MountTarget = {
    name: 'rclone',
    backend: 's3',
    version: peers.versions.rclone ?? 'unknown',
    unavailable: unavailableReason(rcloneBinary, join(peers.benchBin, 'rclone.skip')),
    credentials: 'MinIO root access key (web identity through env_auth and the AWS SDK for Go against MinIO STS was not tried)',
    mount: async () => {
      const mountpoint = await newMountpoint();
      const work = await mkdtemp(join(tmpdir(), 'bucketmount-bench-rclone-'));
      const configFile = join(work, 'rclone.conf');
      await writeFile(configFile, '');
      return spawnMount({
        target: 'rclone',
        command: rcloneBinary,
        args: [
          'mount', `:s3:${S3_BUCKET}`, mountpoint,
          '--config', configFile,
          '--s3-provider', 'Minio',
          '--s3-endpoint', proxy.endpoint,
          '--s3-region', minio.region,
          '--s3-access-key-id', rootKey.accessKeyId,
          '--s3-secret-access-key', rootKey.secretAccessKey,
          '--s3-force-path-style=true',
          '--cache-dir', join(work, 'cache'),
        ],
        environment: baseEnvironment(),
        mountpoint,
        stopWithSignal: false,
        cleanup: () => rm(work, { recursive: true, force: true }),
      });
    },
  };

  const goofysBinary = join(peers.benchBin, 'goofys');
  const goofys: MountTarget = {
    name: 'goofys',
    backend: 's3',
    version: peers.versions.goofys ?? 'unknown',
    unavailable: unavailableReason(goofysBinary, join(peers.benchBin, 'goofys.skip')),
    credentials: rootCredentials,
    mount: async () => {
      const mountpoint = await newMountpoint();
      return spawnMount({
        target: 'goofys',
        command: goofysBinary,
        args: ['-f', '--endpoint', proxy.endpoint, '--region', minio.region, S3_BUCKET, mountpoint],
        environment: { ...baseEnvironment(), AWS_ACCESS_KEY_ID: rootKey.accessKeyId, AWS_SECRET_ACCESS_KEY: rootKey.secretAccessKey },
        mountpoint,
        stopWithSignal: false,
      });
    },
  };

  return [bucketmount, s3fs, rclone, goofys];
}

export function gcsTargets(environment: GcsEnvironment, peers: PeerBinaries): MountTarget[] {
  const { gcp } = environment;

  const bucketmount: MountTarget = {
    name: 'bucketmount',
    backend: 'gcs',
    version: peers.versions.bucketmount ?? 'unknown',
    unavailable: existsSync(BUILT_CLI_PATH) ? undefined : `${BUILT_CLI_PATH} not built; run npm run build`,
    credentials: 'web identity token file through the GCP STS and IAM Credentials fakes, behind the authorizing proxy',
    mount: async (extraArgs = []) => {
      const mountpoint = await newMountpoint();
      return spawnMount({
        target: 'bucketmount',
        command: CLI_PATH,
        args: [
          'mount', `gs://${GCS_BUCKET}`, mountpoint,
          '--endpoint', environment.authorizedProxy.endpoint,
          '--token-file', environment.tokenFile,
          '--gcp-wif-provider', gcp.fakes.providerName,
          '--gcp-service-account', gcp.serviceAccount,
          '--gcp-sts-endpoint', gcp.fakes.stsTokenUrl,
          '--gcp-iam-endpoint', gcp.fakes.iamEndpoint,
          ...extraArgs,
        ],
        environment: baseEnvironment(),
        mountpoint,
        stopWithSignal: true,
      });
    },
  };

  // gcsfuse reads anonymously, through a proxy like the authorizing one that
  // checks nothing, so that its requests pass the same two hops as the
  // daemon's. That proxy sets the Host header to the emulator's: straight
  // through the counting proxy, with the proxy's port in Host, gcsfuse's reads
  // failed with ESTALE.
  const gcsfuseBinary = join(peers.benchBin, 'gcsfuse');
  const gcsfuse: MountTarget = {
    name: 'gcsfuse',
    backend: 'gcs',
    version: peers.versions.gcsfuse ?? 'unknown',
    unavailable: unavailableReason(gcsfuseBinary, join(peers.benchBin, 'gcsfuse.skip')),
    credentials: 'anonymous access through a pass-through proxy (gcsfuse cannot use the local GCP fakes)',
    serverBytes: () => environment.anonymousProxy.bytesFromServer(),
    mount: async () => {
      const mountpoint = await newMountpoint();
      return spawnMount({
        target: 'gcsfuse',
        command: gcsfuseBinary,
        args: [
          '--foreground',
          '--anonymous-access',
          '--custom-endpoint', `${environment.anonymousProxy.endpoint}/storage/v1/`,
          '--implicit-dirs',
          GCS_BUCKET, mountpoint,
        ],
        environment: baseEnvironment(),
        mountpoint,
        stopWithSignal: false,
      });
    },
  };

  return [bucketmount, gcsfuse];
}
