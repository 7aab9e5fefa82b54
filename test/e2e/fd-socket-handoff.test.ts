/**
 * The descriptor hand-off between two unrelated processes, as between two
 * containers of a pod. deploy/fd-helper/fuse-fd-helper.py runs as root,
 * mounts /dev/fuse and sends the descriptor over a Unix socket. The daemon,
 * started separately without any capability, receives it with
 * --fuse-fd-socket. When the daemon exits, the helper detaches the mount.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';

import { startBackend, type TestBackend } from './backends.js';
import { CLI_PATH, REPOSITORY_ROOT, daemonEnvironment, runProcess, removeMountpoint, shell } from './daemon.js';

const BUCKET = 'bucketmount-fd-socket';
const DAEMON_UID = 65534;
const SANDBOX_UID = 1000;
const HELPER = join(REPOSITORY_ROOT, 'deploy', 'fd-helper', 'fuse-fd-helper.py');
const READY_TIMEOUT_MS = 60_000;
const EXIT_TIMEOUT_MS = 30_000;

/** A child process with its collected output. */
interface Child {
  process: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
}

function startChild(file: string, args: string[], environment: Record<string, string>): Child {
  const child = spawn(file, args, { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (status) => resolve(status)));
  return { process: child, output: () => output, exited };
}

/** Resolves to the exit status, or to 'running' when the process has not exited within `timeoutMs`. */
async function exitWithin(child: Child, timeoutMs: number): Promise<number | null | 'running'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'running'>((resolve) => {
    timer = setTimeout(() => resolve('running'), timeoutMs);
  });
  try {
    return await Promise.race([child.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function processStatus(pid: number): Promise<Record<string, string>> {
  const fields: Record<string, string> = {};
  for (const line of (await readFile(`/proc/${pid}/status`, 'utf8')).split('\n')) {
    const [name, value] = line.split(':\t');
    if (name !== undefined && value !== undefined) fields[name] = value.trim();
  }
  return fields;
}

/** Mount points of this mount namespace, decoded from /proc/self/mountinfo. */
async function mountPoints(): Promise<string[]> {
  const lines = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').filter((line) => line !== '');
  return lines.map((line) => (line.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(parseInt(octal, 8))));
}

/** The setpriv prefix that runs a program as the daemon's user with no capability. */
const UNPRIVILEGED = ['--reuid', String(DAEMON_UID), '--regid', String(DAEMON_UID), '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'];

describe('descriptor hand-off over a Unix socket on s3', () => {
  let backend: TestBackend;
  let scratch: string;
  let tokenFile: string;
  const children: Child[] = [];
  const mountpoints: string[] = [];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'bucketmount-fd-socket-'));
    await chmod(scratch, 0o755);
    backend = await startBackend('s3');
    await backend.createBucket(BUCKET);
    await backend.putObject(BUCKET, 'hello.txt', 'hello from the bucket\n');

    // The daemon's user must read the token, as with a projected volume and fsGroup.
    const tokenDirectory = join(scratch, 'token');
    await mkdir(tokenDirectory, { mode: 0o700 });
    tokenFile = join(tokenDirectory, 'token');
    await writeFile(tokenFile, await readFile(backend.tokenFile), { mode: 0o400 });
    await chown(tokenFile, DAEMON_UID, DAEMON_UID);
    await chown(tokenDirectory, DAEMON_UID, DAEMON_UID);
  });

  afterEach(async () => {
    for (const child of children.splice(0)) {
      if (child.process.exitCode === null && child.process.signalCode === null) {
        child.process.kill('SIGTERM');
        if ((await exitWithin(child, EXIT_TIMEOUT_MS)) === 'running') child.process.kill('SIGKILL');
      }
    }
    for (const mountpoint of mountpoints.splice(0)) {
      await shell(`umount -l '${mountpoint}' 2>/dev/null; true`);
      await removeMountpoint(mountpoint);
    }
  });

  afterAll(async () => {
    await backend?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  const daemonArgs = (mountpoint: string, socketPath: string, extra: string[] = []): string[] => {
    const args = backend.connectionArgs();
    args[args.indexOf('--token-file') + 1] = tokenFile;
    return [
      ...UNPRIVILEGED,
      CLI_PATH,
      'mount',
      backend.bucketUrl(BUCKET),
      mountpoint,
      '--fuse-fd-socket',
      socketPath,
      ...args,
      '--uid',
      String(SANDBOX_UID),
      '--gid',
      String(SANDBOX_UID),
      ...extra,
    ];
  };

  const newMountpoint = async (): Promise<string> => {
    const mountpoint = await mkdtemp(join(tmpdir(), 'bucketmount-fd-socket-mnt-'));
    await chmod(mountpoint, 0o755);
    mountpoints.push(mountpoint);
    return mountpoint;
  };

  test('unprivileged daemon serves the helper mount', async () => {
    const mountpoint = await newMountpoint();
    const socketDirectory = await mkdtemp(join(scratch, 'socket-'));
    await chmod(socketDirectory, 0o755);
    const socketPath = join(socketDirectory, 'fuse.sock');

    // The daemon starts first and waits for the socket, as a container may start before the helper's.
    const daemon = startChild('setpriv', daemonArgs(mountpoint, socketPath), daemonEnvironment({ HOME: scratch }));
    children.push(daemon);
    const helper = startChild(
      'python3',
      [HELPER, '--mountpoint', mountpoint, '--socket', socketPath, '--uid', String(DAEMON_UID), '--gid', String(DAEMON_UID), '--allow-other'],
      daemonEnvironment(),
    );
    children.push(helper);

    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!daemon.output().includes('"event":"mount-ready"')) {
      if (daemon.process.exitCode !== null || Date.now() > deadline) {
        throw new Error(`the daemon did not become ready; its output:\n${daemon.output()}\nthe helper's output:\n${helper.output()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(daemon.output()).toContain('"event":"fuse-fd-received"');
    expect(helper.output()).toContain('sent the /dev/fuse descriptor');

    // setpriv executed node in its own place, so the child's pid is the daemon's.
    const status = await processStatus(daemon.process.pid!);
    expect(status.CapEff).toBe('0000000000000000');
    expect(status.CapPrm).toBe('0000000000000000');
    expect(status.Uid?.split(/\s+/)).toEqual([String(DAEMON_UID), String(DAEMON_UID), String(DAEMON_UID), String(DAEMON_UID)]);

    // Sandbox code, another process of another user, reads and writes through the mount.
    const program = `
import os, sys
root = sys.argv[1]
print(open(os.path.join(root, "hello.txt")).read(), end="")
with open(os.path.join(root, "from-sandbox.txt"), "w") as f: f.write("written by the sandbox\\n")
print(os.stat(os.path.join(root, "from-sandbox.txt")).st_uid)
`;
    const sandbox = await runProcess(
      'setpriv',
      ['--reuid', String(SANDBOX_UID), '--regid', String(SANDBOX_UID), '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '/usr/bin/python3', '-c', program, mountpoint],
      { timeoutMs: 60_000 },
    );
    expect(sandbox.stderr).toBe('');
    expect(sandbox.stdout).toBe(`hello from the bucket\n${SANDBOX_UID}\n`);
    expect((await backend.getObject(BUCKET, 'from-sandbox.txt'))?.toString()).toBe('written by the sandbox\n');

    expect(await mountPoints()).toContain(mountpoint);

    // The daemon stops; the helper sees its socket close and detaches the mount.
    daemon.process.kill('SIGTERM');
    expect(await exitWithin(daemon, EXIT_TIMEOUT_MS)).toBe(0);
    expect(await exitWithin(helper, EXIT_TIMEOUT_MS)).toBe(0);
    expect(helper.output()).toContain(`detached ${mountpoint}`);
    expect(await mountPoints()).not.toContain(mountpoint);
    expect(await readdir(mountpoint)).toEqual([]);
  });

  test('daemon times out without a helper', async () => {
    const mountpoint = await newMountpoint();
    const socketPath = join(scratch, 'nobody-listens.sock');

    const result = await runProcess('setpriv', daemonArgs(mountpoint, socketPath, ['--fuse-fd-timeout', '1']), {
      environment: daemonEnvironment({ HOME: scratch }),
      timeoutMs: 60_000,
    });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain(`timed out connecting to the descriptor socket ${socketPath}`);
  });

  test('daemon rejects a descriptor that is not /dev/fuse', async () => {
    const mountpoint = await newMountpoint();
    const socketDirectory = await mkdtemp(join(scratch, 'socket-'));
    await chmod(socketDirectory, 0o777);
    const socketPath = join(socketDirectory, 'fuse.sock');

    // A stand-in helper that sends /dev/null to the first client.
    const sender = startChild(
      'python3',
      [
        '-c',
        'import os, socket, sys\nlistener = socket.socket(socket.AF_UNIX)\nlistener.bind(sys.argv[1])\nos.chmod(sys.argv[1], 0o666)\nlistener.listen(1)\nconnection, _ = listener.accept()\nsocket.send_fds(connection, [b"F"], [os.open("/dev/null", os.O_RDWR)])\nconnection.recv(1)',
        socketPath,
      ],
      daemonEnvironment(),
    );
    children.push(sender);

    const result = await runProcess('setpriv', daemonArgs(mountpoint, socketPath, ['--fuse-fd-timeout', '20']), {
      environment: daemonEnvironment({ HOME: scratch }),
      timeoutMs: 60_000,
    });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('is not /dev/fuse');
    expect(result.stderr).toContain('device 1:3');
  });
});
