/**
 * Runs the built `bucketmount` command as a separate process, the way a pod
 * runs it, and waits for its mount to be ready.
 *
 * The daemon gets an explicit environment: PATH and HOME only, plus what the
 * caller passes. Nothing from this machine's AWS or CA variables reaches it,
 * so a test proves that the token file and the role alone authenticate.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The repository root, found from this file whether it runs from test/ or from dist/test/. */
export const REPOSITORY_ROOT = findRepositoryRoot(dirname(fileURLToPath(import.meta.url)));
/**
 * The `bucketmount` command as users run it: the launcher, which starts the
 * daemon from the start-up snapshot when the build made one for the Node.js
 * in BUCKETMOUNT_NODE (see daemonEnvironment), and from the modules otherwise.
 */
export const CLI_PATH = join(REPOSITORY_ROOT, 'src', 'startup', 'bucketmount');

/** The compiled command line, which the launcher needs; `npm run build` makes it. */
export const BUILT_CLI_PATH = join(REPOSITORY_ROOT, 'dist', 'src', 'cli', 'main.js');

function findRepositoryRoot(start: string): string {
  let directory = start;
  while (!existsSync(join(directory, 'package.json'))) {
    const parent = dirname(directory);
    if (parent === directory) throw new Error(`no package.json above ${start}`);
    directory = parent;
  }
  return directory;
}

const READY_EVENT = '"event":"mount-ready"';
const DEFAULT_READY_TIMEOUT_MS = 60_000;

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The minimal environment of a daemon or CLI process; the launcher runs the Node.js that runs the tests. */
export function daemonEnvironment(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/root',
    BUCKETMOUNT_NODE: process.execPath,
    ...extra,
  };
}

/** Runs a program to completion with a hard timeout, collecting its output. */
export async function runProcess(file: string, args: string[], options: { environment?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CommandResult> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { env: options.environment ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));

    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} ${args.join(' ').slice(0, 200)} did not finish within ${timeoutMs} ms; output so far:\n${stdout}\n${stderr}`));
    }, timeoutMs);

    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolvePromise({ status, stdout, stderr });
    });
  });
}

/** Runs `bucketmount ARGS` to completion (for `check`, `unmount` and usage errors). */
export async function runCli(args: string[], environment: Record<string, string> = {}, timeoutMs = 60_000): Promise<CommandResult> {
  return runProcess(CLI_PATH, args, { environment: daemonEnvironment(environment), timeoutMs });
}

/** Runs a shell command (through /bin/sh) as a separate process, as sandbox code would. */
export async function shell(command: string, timeoutMs = 120_000): Promise<CommandResult> {
  return runProcess('/bin/sh', ['-c', command], { timeoutMs });
}

/** Runs a Python program given as text, with arguments, as a separate process. */
export async function python(program: string, args: string[] = [], timeoutMs = 120_000): Promise<CommandResult> {
  return runProcess('python3', ['-c', program, ...args], { timeoutMs });
}

export interface MountedDaemon {
  mountpoint: string;
  process: ChildProcess;
  /** Everything the daemon wrote to standard error so far. */
  logs(): string;
  /** Sends SIGTERM and waits for the exit status. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** The exit of the process, whenever it happens. */
  exited: Promise<number | null>;
}

export interface StartDaemonOptions {
  bucketUrl: string;
  /** Options after the URL and the mount point (credentials, endpoints, modes). */
  args: string[];
  environment?: Record<string, string>;
  mountpoint?: string;
  readyTimeoutMs?: number;
  /**
   * Starts the daemon in a process group of its own, so that a Ctrl-C in the
   * caller's terminal reaches only the caller, which then stops the daemon
   * with one signal. Otherwise the daemon would get the SIGINT as well, and
   * take the caller's SIGTERM as a second signal that forces its exit.
   */
  ownProcessGroup?: boolean;
}

/** Starts `bucketmount mount` and resolves once it logs that the mount is ready. */
export async function startDaemon(options: StartDaemonOptions): Promise<MountedDaemon> {
  const mountpoint = options.mountpoint ?? (await mkdtemp(join(tmpdir(), 'bucketmount-mnt-')));
  const child = spawn(CLI_PATH, ['mount', options.bucketUrl, mountpoint, ...options.args], {
    env: daemonEnvironment(options.environment),
    detached: options.ownProcessGroup === true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let logs = '';
  child.stdout.on('data', (chunk: Buffer) => (logs += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (logs += chunk.toString()));

  const exited = new Promise<number | null>((resolvePromise) => {
    child.on('exit', (status, signal) => resolvePromise(status ?? (signal ? 128 : null)));
  });

  const readyTimeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  await new Promise<void>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the daemon did not report a ready mount within ${readyTimeoutMs} ms; its output:\n${logs}`));
    }, readyTimeoutMs);

    const onData = (): void => {
      if (logs.includes(READY_EVENT)) {
        clearTimeout(timer);
        child.stderr.off('data', onData);
        resolvePromise();
      }
    };
    child.stderr.on('data', onData);

    void exited.then((status) => {
      clearTimeout(timer);
      reject(new Error(`the daemon exited with status ${status} before the mount was ready; its output:\n${logs}`));
    });
  });

  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const status = await exited;
    await forceUnmount(mountpoint);
    return status;
  };

  return { mountpoint, process: child, logs: () => logs, stop, exited };
}

/** Detaches a mount point whatever state its daemon is in; errors mean it was not mounted. */
export async function forceUnmount(mountpoint: string): Promise<void> {
  try {
    await execFileAsync('fusermount3', ['-u', '-z', mountpoint]);
  } catch {
    // Not mounted any more: the daemon unmounted it itself.
  }
}

/** Removes a temporary mount point directory after its mount is gone. */
export async function removeMountpoint(mountpoint: string): Promise<void> {
  await forceUnmount(mountpoint);
  await rm(mountpoint, { recursive: true, force: true });
}
